"""Hyperparameters of the paper's two-stage training: stage 1 (train_autoencoder.py), then stage 2
(train_fusion.py) on the frozen stage-1 encoders.

Edit the values here, or override any on the command line (`python train_fusion.py --epochs=2`).
Each class is complete: stage 1, stage 2 and end-to-end training (args_end_to_end.py) share no
values, so an edit here never changes another stage. The defaults reproduce the reference (CrossFuse
spec section 8). `--preset=NAME` replaces the values training/presets.py lists for it (`--help` shows
them); the comparison's report names every setting in which the arms were not trained alike.
"""
from utils.args_base import Settings


class Stage1(Settings):
    """train_autoencoder.py: one autoencoder per modality, reconstruction loss.

    Writes out_root/autoencoder/auto_encoder_epoch_N_{ir,vi}.model and loss/loss_data_autoencoder_{ir,vi}_eK.mat.
    """

    preset = "reference"  # reference (the values below), fair or cpu (training/presets.py)
    # optimisation: Adam
    epochs = 4
    lr = 1e-4
    batch = 2
    weight_decay = 0.9  # Adam's weight decay, as the reference sets it
    lr_schedule = "step"  # step: lr for lr_step_epochs epochs, then x lr_gamma; or cosine: down to lr_min
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    warmup_epochs = 0.0  # > 0: the lr ramps up linearly over this many epochs, step by step (0 = reference)
    # data
    dataset = "data/KAIST"  # a dataset root: KAIST, ir/vi subfolders or IRn/VISn names (data/README.md); or several,
    # joined by commas, each DIR[START:END] for a slice of its pairs: "roadscene[:170],m3fd-train[:100]"
    images = ""  # or one folder of single images of the chosen modality, used instead of `dataset`
    modality = "both"  # ir, vi or both (IR first, then VIS)
    train_num = 40000  # the first N images (0 = all)
    image_size = 256  # resized (bilinear) to image_size x image_size
    crop = False  # random image_size crops instead of resizing
    hflip = False  # random horizontal flips
    vflip = False  # random vertical flips
    cache = False  # decode the dataset once into a memory-mapped uint8 array and train from it
    on_error = "skip"  # a bad image: skip it with a warning (skip) or stop (raise)
    workers = "auto"  # DataLoader processes; auto = half of the cores, 1 to 8
    ir_range = ""  # "LOW,HIGH": a 16-bit/float IR camera's fixed range mapped to 0..255 ("" = each image's own)
    # loss = w_mse * MSE + w_ssim * (1 - MS-SSIM)
    w_mse = 1.0
    w_ssim = 10000.0
    # model: the paper's widths
    shallow = 32  # channels of the full-resolution shallow features
    growth = 64  # channels each dense layer adds
    dense_layers = 3
    deep = 128  # channels of the 1/8-resolution deep features
    decoder = 64  # width of the reconstruction decoder's middle layers
    # run
    out_root = "models"  # the run's files land in out_root/autoencoder (models/README.md)
    device = "auto"  # auto, cpu, cuda or cuda:N
    amp = False  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX)
    compile = False  # torch.compile the model
    seed = 0
    log_every = 10  # a log line every N batches
    checkpoint_every = 200  # training-state checkpoint every N steps, and at each epoch end
    preview_images = 4  # fixed items shown in the per-epoch PNG grid
    tensorboard = False  # also log losses, lr, temperature and previews for TensorBoard (out folder's tensorboard/)
    resume = False  # continue from the training-state checkpoint
    overwrite = False  # start afresh where an earlier run of this stage is: its files are deleted first
    demo = False  # generate data/demo and train a short schedule with a narrow model


class Stage2(Settings):
    """train_fusion.py: the CAM and fusion decoder on the frozen stage-1 encoders, fusion loss.

    Encoder widths come from the stage-1 files. Writes out_root/transfuse/fusetrans_epoch_N.model (a
    complete model) and loss/loss_data_trans_eK.mat.
    """

    preset = "reference"  # reference (the values below), fair or cpu (training/presets.py)
    # optimisation: Adam over the CAM and the decoder
    epochs = 32
    lr = 1e-3
    batch = 8
    weight_decay = 0.9  # Adam's weight decay, as the reference sets it
    lr_schedule = "step"  # step: lr for lr_step_epochs epochs, then x lr_gamma; or cosine: down to lr_min
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    warmup_epochs = 0.0  # > 0: the lr ramps up linearly over this many epochs, step by step (0 = reference)
    # data
    dataset = "data/KAIST"  # a dataset root: KAIST, ir/vi subfolders or IRn/VISn names (data/README.md); or several,
    # joined by commas, each DIR[START:END] for a slice of its pairs: "roadscene[:170],m3fd-train[:100]"
    train_num = 20000  # the first N pairs (0 = all)
    image_size = 256  # resized (bilinear) to image_size x image_size
    crop = False  # random image_size crops instead of resizing
    hflip = False  # random horizontal flips
    vflip = False  # random vertical flips
    cache = False  # decode the dataset once into a memory-mapped uint8 array and train from it
    on_error = "skip"  # a bad pair: skip it with a warning (skip) or stop (raise)
    workers = "auto"  # DataLoader processes; auto = half of the cores, 1 to 8
    ir_range = ""  # "LOW,HIGH": a 16-bit/float IR camera's fixed range mapped to 0..255 ("" = each image's own)
    test_dir = ""  # a folder of test pairs (ir/ and vi/ inside) fused at each epoch end
    # loss = w_int * intensity + w_grad * gradient
    w_int = 1.0
    w_grad = 10.0
    # model: the fusion part (the paper's widths; the encoders' come from their files)
    decoder = 64  # width of the fusion decoder's middle layers
    tile = 32  # CAM tile side at inference, in deep-feature pixels
    patch = 2  # token patch side
    heads = 16
    mlp_ratio = 4
    self_depth = 1  # transformer blocks per self-attention module
    cross_depth = 1  # blocks per cross-attention module
    temperature = "fixed"  # fixed = 1 (reference); block = learnable, one per cross block; head = one per head
    feature_norm = "none"  # none (reference) or standard: features centred + scaled at the hand-off (docs/)
    cam_gate = False  # True: CAM output x a learned scalar starting at 0 (docs/); False = reference
    output_norm = "minmax"  # minmax (reference: stretch to 0..255); standard or rule: from the inputs' statistics
    deep_weights = "signed"  # signed (reference: channel sums, which can cancel) or magnitude: never negative (docs/)
    # the frozen encoders
    ir_encoder = ""  # stage-1 files; "" = the latest epoch in out_root/autoencoder
    vi_encoder = ""
    reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
    allow_other_modality = False  # accept an encoder file recorded for the other modality (swapped on purpose)
    # run
    out_root = "models"  # the run's files land in out_root/transfuse (models/README.md)
    device = "auto"  # auto, cpu, cuda or cuda:N
    amp = False  # bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX)
    compile = False  # torch.compile the model
    seed = 0
    log_every = 10  # a log line every N batches
    checkpoint_every = 200  # training-state checkpoint every N steps, and at each epoch end
    preview_images = 4  # fixed pairs shown in the per-epoch PNG grid
    tensorboard = False  # also log losses, lr, temperature and previews for TensorBoard (out folder's tensorboard/)
    resume = False  # continue from the training-state checkpoint
    overwrite = False  # start afresh where an earlier run of this stage is: its files are deleted first
    demo = False  # generate data/demo and train a short schedule with a narrow model
