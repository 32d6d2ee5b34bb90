"""Hyperparameters of end-to-end training: both encoders, the CAM and the decoder together.

Edit the values here, or override any of them on the command line (`python train_end_to_end.py
--epochs=2 --lr=1e-4`). Data, batch, lr, epochs and loss follow the reference's stage 2; the
schedule is cosine and the cross-attention temperature is learnable. The encoders start from random
weights, or from stage-1 weights with one of the init_* settings (the warm-start arm).
"""
from utils.cores import loader_workers


class Args:
    # data
    dataset = "data/KAIST"  # a dataset root: KAIST, ir/vi subfolders or IRn/VISn names (data/README.md)
    train_num = 20000  # the first N pairs (0 = all)
    image_size = 256  # resized (bilinear) to image_size x image_size
    crop = False  # random image_size crops instead of resizing
    hflip = False
    vflip = False
    cache = False  # decode the dataset once into a memory-mapped uint8 array and train from it
    on_error = "skip"  # a bad image: skip it with a warning (skip) or stop (raise)
    workers = loader_workers()
    # optimisation: one Adam over every parameter
    batch_size = 8
    lr = 1e-3
    epochs = 32
    weight_decay = 0.9
    lr_schedule = "cosine"  # cosine from lr down to lr_min over the epochs; or step
    lr_step_epochs = 2
    lr_gamma = 0.1
    lr_min = 1e-6
    w_int = 1.0  # loss = w_int * intensity + w_grad * gradient
    w_grad = 10.0
    # model (the paper's widths)
    shallow = 32
    growth = 64
    dense_layers = 3
    deep = 128
    decoder = 64
    tile = 32
    patch = 2
    heads = 16
    mlp_ratio = 4
    self_depth = 1
    cross_depth = 1
    temperature = "block"  # learnable, one per cross block; head = one per head; fixed = 1 (reference)
    feature_norm = "none"  # none (reference) or standard: features centred + scaled at the hand-off (docs/cpu-study.md)
    cam_gate = False  # True: CAM output x a learned scalar starting at 0 (docs/cpu-study.md); False = reference
    # warm start: begin the encoders from stage-1 weights, then train everything jointly as above
    init_from = ""  # a stage-1 output folder (out_root or its autoencoder/): its latest epoch's encoders
    init_ir_encoder = ""  # or the encoder files themselves (any .model holding an encoder)
    init_vi_encoder = ""
    init_reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
    # run
    out_root = "models"  # writes out_root/end_to_end/ (out_root/end_to_end_warm/ for a warm start): *.model, loss/
    device = "auto"  # auto, cpu, cuda or cuda:N
    amp = False  # bf16 autocast on CUDA
    compile = False  # torch.compile the model
    seed = 0
    step = 10  # a log line every `step` batches
    checkpoint_every = 200  # training-state checkpoint every N steps, and at each epoch end
    preview_images = 4  # fixed training pairs shown in the per-epoch PNG grid
    test_dir = ""  # a folder of test pairs (ir/vi subfolders) fused at each epoch end
    resume = False
    demo = False  # generate data/demo and train a short schedule with a narrow model
