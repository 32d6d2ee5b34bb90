"""Hyperparameters of the paper's two-stage training.

Edit the values here, or override any of them on the command line (`python train_fusion.py
--epochs=2`). The defaults reproduce the reference (CrossFuse spec section 8).
"""
from utils.cores import loader_workers


class Stage1:
    """train_autoencoder.py: one autoencoder per modality, reconstruction loss."""

    # data
    dataset = "data/KAIST"  # a dataset root: KAIST, ir/vi subfolders or IRn/VISn names (data/README.md)
    images = ""  # or one folder of single images of the chosen modality, used instead of `dataset`
    modality = "both"  # ir, vi or both (IR first, then VIS)
    train_num = 40000  # the first N images (0 = all)
    image_size = 256  # resized (bilinear) to image_size x image_size
    crop = False  # random image_size crops instead of resizing
    hflip = False  # random flips
    vflip = False
    cache = False  # decode the dataset once into a memory-mapped uint8 array and train from it
    on_error = "skip"  # a bad image: skip it with a warning (skip) or stop (raise)
    workers = loader_workers()  # DataLoader worker processes: half of the cores, 1 to 8
    # optimisation
    batch_size = 2
    lr = 1e-4
    epochs = 4
    weight_decay = 0.9  # Adam's weight_decay, as the reference sets it
    lr_schedule = "step"  # step: lr for lr_step_epochs epochs, then x lr_gamma; or cosine down to lr_min
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    w_mse = 1.0  # loss = w_mse * MSE + w_ssim * (1 - MS-SSIM)
    w_ssim = 10000.0
    # model (the paper's widths)
    shallow = 32
    growth = 64
    dense_layers = 3
    deep = 128
    decoder = 64
    # run
    out_root = "models"  # writes out_root/autoencoder/auto_encoder_epoch_N_{ir,vi}.model
    device = "auto"  # auto, cpu, cuda or cuda:N
    amp = False  # bf16 autocast on CUDA
    compile = False  # torch.compile the model
    seed = 0
    step = 10  # a log line every `step` batches
    checkpoint_every = 200  # training-state checkpoint every N steps, and at each epoch end
    preview_images = 4  # fixed training images shown in the per-epoch PNG grid
    resume = False  # continue from the training-state checkpoint
    demo = False  # generate data/demo and train a short schedule with a narrow model


class Stage2:
    """train_fusion.py: CAM + fusion decoder on the frozen stage-1 encoders, fusion loss."""

    # data
    dataset = "data/KAIST"
    train_num = 20000
    image_size = 256
    crop = False
    hflip = False
    vflip = False
    cache = False
    on_error = "skip"
    workers = loader_workers()
    # optimisation
    batch_size = 8
    lr = 1e-3
    epochs = 32
    weight_decay = 0.9
    lr_schedule = "step"
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    w_int = 1.0  # loss = w_int * intensity + w_grad * gradient
    w_grad = 10.0
    # encoders from stage 1
    ir_encoder = ""  # checkpoint files; "" = the latest epoch in out_root/autoencoder
    vi_encoder = ""
    reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
    allow_other_modality = False  # accept an encoder file recorded for the other modality (swapped on purpose)
    # model: the fusion part (encoder widths come from the stage-1 checkpoints)
    decoder = 64
    tile = 32
    patch = 2
    heads = 16
    mlp_ratio = 4
    self_depth = 1
    cross_depth = 1
    temperature = "fixed"  # the reference's re-softmax temperature is 1; block or head = learnable
    feature_norm = "none"  # none (reference) or standard: features centred + scaled at the hand-off (docs/cpu-study.md)
    cam_gate = False  # True: CAM output x a learned scalar starting at 0 (docs/cpu-study.md); False = reference
    # run
    out_root = "models"  # writes out_root/transfuse/fusetrans_epoch_N.model and loss/*.mat
    device = "auto"
    amp = False
    compile = False
    seed = 0
    step = 10
    checkpoint_every = 200
    preview_images = 4
    test_dir = ""  # a folder of test pairs (ir/vi subfolders) fused at each epoch end
    resume = False
    demo = False
