"""Hyperparameters of end-to-end training: both encoders, the CAM and the decoder together.

Edit the values here, or override any of them on the command line (`python train_end_to_end.py
--epochs=2 --lr=1e-4`). Data, batch, lr, epochs, loss and run settings are stage 2's (`Fusion` in
args_two_stage.py, declared once for both); what differs is below: the schedule is cosine and the
cross-attention temperature is learnable. The encoders start from random weights, or from stage-1
weights with one of the init_* settings (the warm-start arm).
"""
from args_two_stage import Fusion


class EndToEnd(Fusion):
    """train_end_to_end.py: writes out_root/end_to_end/ (out_root/end_to_end_warm/ for a warm start)."""

    lr_schedule = "cosine"  # cosine from lr down to lr_min over the epochs; or step
    temperature = "block"
    # encoders (the paper's widths)
    shallow = 32
    growth = 64
    dense_layers = 3
    deep = 128
    # warm start: begin the encoders from stage-1 weights, then train everything jointly as above
    init_from = ""  # a stage-1 output folder (out_root or its autoencoder/): its latest epoch's encoders
    init_ir_encoder = ""  # or the encoder files themselves (any .model holding an encoder)
    init_vi_encoder = ""
    init_reference = ""  # or a folder with the paper's released *_ir.model / *_vi.model
