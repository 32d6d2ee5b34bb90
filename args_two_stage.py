"""Hyperparameters of the paper's two-stage training, and the settings every training script shares.

Edit the values here, or override any of them on the command line (`python train_fusion.py
--epochs=2`). The defaults reproduce the reference (CrossFuse spec section 8). A preset
(`--preset=fair` or `--preset=cpu`) replaces the values it names before the command line's are applied;
`python train_fusion.py --help` lists them. The README's "Presets" section says why each value is there.
"""
from utils.cores import loader_workers
from utils.settings import Settings

# The settings both arms share in the `fair` preset: the same optimiser, schedule, weight decay and
# cross-attention, with the two changes that keep the CAM from printing a fixed grid (docs/cpu-study.md).
FAIR = dict(weight_decay=0.0, lr_schedule="cosine")
FAIR_FUSION = dict(FAIR, temperature="block", feature_norm="standard", cam_gate=True)
# The `cpu` preset: fair, on RoadScene-sized data (about 200 pairs) at 128 px on a 2-core machine.
CPU = dict(train_num=0, image_size=128, cache=True, workers=0, log_every=9, checkpoint_every=100)


class Training(Settings):
    """What every training script reads: data, optimisation and the run."""

    preset = "reference"  # reference (the values below), fair or cpu: see `presets` and the README
    # data
    dataset = "data/KAIST"  # a dataset root: KAIST, ir/vi subfolders or IRn/VISn names (data/README.md)
    train_num = 20000  # the first N pairs (0 = all)
    image_size = 256  # resized (bilinear) to image_size x image_size
    crop = False  # random image_size crops instead of resizing
    hflip = False  # random flips
    vflip = False
    cache = False  # decode the dataset once into a memory-mapped uint8 array and train from it
    on_error = "skip"  # a bad image: skip it with a warning (skip) or stop (raise)
    workers = loader_workers()  # DataLoader worker processes: half of the cores, 1 to 8
    # optimisation: Adam over the trainable parameters
    batch_size = 8
    lr = 1e-3
    epochs = 32
    weight_decay = 0.9  # Adam's weight_decay, as the reference sets it
    lr_schedule = "step"  # step: lr for lr_step_epochs epochs, then x lr_gamma; or cosine down to lr_min
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    # run
    out_root = "models"  # the run's files land in a subfolder of it (models/README.md)
    device = "auto"  # auto, cpu, cuda or cuda:N
    amp = False  # bf16 autocast on CUDA
    compile = False  # torch.compile the model
    seed = 0
    log_every = 10  # a log line every N batches (formerly `step`)
    checkpoint_every = 200  # training-state checkpoint every N steps, and at each epoch end
    preview_images = 4  # fixed training items shown in the per-epoch PNG grid
    resume = False  # continue from the training-state checkpoint
    demo = False  # generate data/demo and train a short schedule with a narrow model


class Stage1(Training):
    """train_autoencoder.py: one autoencoder per modality, reconstruction loss."""

    presets = {"fair": FAIR, "cpu": dict(FAIR, **CPU, epochs=3, batch_size=4, lr=5e-4)}
    demo_epochs = 6
    images = ""  # or one folder of single images of the chosen modality, used instead of `dataset`
    modality = "both"  # ir, vi or both (IR first, then VIS)
    train_num = 40000  # the first N images (0 = all)
    batch_size = 2
    lr = 1e-4
    epochs = 4
    w_mse = 1.0  # loss = w_mse * MSE + w_ssim * (1 - MS-SSIM)
    w_ssim = 10000.0
    # model (the paper's widths)
    shallow = 32
    growth = 64
    dense_layers = 3
    deep = 128
    decoder = 64
    # run: writes out_root/autoencoder/auto_encoder_epoch_N_{ir,vi}.model


class Fusion(Training):
    """What stage 2 and end-to-end training share: the fusion loss, the CAM and decoder, test fusions."""

    presets = {"fair": FAIR_FUSION, "cpu": dict(FAIR_FUSION, **CPU, epochs=4)}
    demo_epochs = 40
    w_int = 1.0  # loss = w_int * intensity + w_grad * gradient
    w_grad = 10.0
    # model: the fusion part (the paper's widths)
    decoder = 64
    tile = 32
    patch = 2
    heads = 16
    mlp_ratio = 4
    self_depth = 1
    cross_depth = 1
    temperature = "fixed"  # fixed = 1 (reference); block = learnable, one per cross block; head = one per head
    feature_norm = "none"  # none (reference) or standard: features centred + scaled at the hand-off (docs/cpu-study.md)
    cam_gate = False  # True: CAM output x a learned scalar starting at 0 (docs/cpu-study.md); False = reference
    test_dir = ""  # a folder of test pairs (ir/vi subfolders) fused at each epoch end


class Stage2(Fusion):
    """train_fusion.py: CAM + fusion decoder on the frozen stage-1 encoders, fusion loss.

    Encoder widths come from the stage-1 checkpoints. Writes out_root/transfuse/fusetrans_epoch_N.model.
    """

    ir_encoder = ""  # checkpoint files; "" = the latest epoch in out_root/autoencoder
    vi_encoder = ""
    reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
    allow_other_modality = False  # accept an encoder file recorded for the other modality (swapped on purpose)
