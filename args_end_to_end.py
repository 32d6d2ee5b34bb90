"""Hyperparameters of end-to-end training (train_end_to_end.py): both encoders, the CAM and the
decoder trained together from scratch, with one loss and one optimiser.

Edit the values here, or override any on the command line (`python train_end_to_end.py --epochs=2
--lr=1e-4 --batch=4`). This file is complete: nothing here is shared with the two-stage arm
(args_two_stage.py), so an edit here changes end-to-end training only. The defaults reproduce the
reference (CrossFuse spec section 8: the end-to-end fork's cosine schedule and learnable
temperature). `--preset=NAME` replaces the values training/presets.py lists for it (`--help` shows
them); the comparison's report names every setting in which the arms were not trained alike.
"""
from utils.args_base import Settings


class EndToEnd(Settings):
    """train_end_to_end.py: writes out_root/end_to_end/ (out_root/end_to_end_warm/ for a warm start)."""

    preset = "reference"  # reference (the values below), fair or cpu (training/presets.py)
    # optimisation: one Adam over every part
    epochs = 32
    lr = 1e-3
    batch = 8
    weight_decay = 0.9  # Adam's weight decay, as the reference sets it
    lr_schedule = "cosine"  # cosine from lr down to lr_min over the epochs; or step: x lr_gamma after lr_step_epochs
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
    # model: encoders (the paper's widths)
    shallow = 32  # channels of the full-resolution shallow features
    growth = 64  # channels each dense layer adds
    dense_layers = 3
    deep = 128  # channels of the 1/8-resolution deep features
    # model: the fusion part
    decoder = 64  # width of the fusion decoder's middle layers
    tile = 32  # CAM tile side at inference, in deep-feature pixels
    patch = 2  # token patch side
    heads = 16
    mlp_ratio = 4
    self_depth = 1  # transformer blocks per self-attention module
    cross_depth = 1  # blocks per cross-attention module
    temperature = "block"  # learnable, one per cross block; head = one per head; fixed = 1
    feature_norm = "none"  # none (reference) or standard: features centred + scaled at the hand-off (docs/)
    cam_gate = False  # True: CAM output x a learned scalar starting at 0 (docs/); False = reference
    output_norm = "minmax"  # minmax (reference: stretch to 0..255); standard or rule: from the inputs' statistics
    deep_weights = "signed"  # signed (reference: channel sums, which can cancel) or magnitude: never negative (docs/)
    # warm start: begin the encoders from stage-1 weights, then train everything jointly as above
    init_from = ""  # a stage-1 output folder (out_root or its autoencoder/): its latest epoch's encoders
    init_ir_encoder = ""  # or the encoder files themselves (any .model holding an encoder)
    init_vi_encoder = ""
    init_reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
    allow_other_modality = False  # accept an encoder file recorded for the other modality (swapped on purpose)
    # run
    out_root = "models"  # the run's files land in out_root/end_to_end (models/README.md)
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
