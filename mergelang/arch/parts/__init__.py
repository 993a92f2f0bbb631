"""Reusable parts of architectures: each module is one kind of network (the LDM/SGM U-Net,
the CLIP text encoders, the LDM VAE), its config as a frozen dataclass, and the generator of
its key names and shapes. An architecture's data module combines them."""
