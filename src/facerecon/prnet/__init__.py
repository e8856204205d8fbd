"""PRNet's UV position-map regression (Feng et al. 2018) and the extension's MobileNetV2 / ResNet-18
encoders, on the morphable model's own UV layout (docs/prnet.md).

`uv`: position maps, their read-back and PRNet's weight mask; `nets`: the encoder-decoder networks;
`model`: the network with its map scale, decoding maps into meshes / landmarks / pose, weights files;
`data`: training pairs from data-engine folders; `train`: the training loop (`facerecon train --head
prnet`). The method is `methods/prnet.py` ("prnet").
"""
