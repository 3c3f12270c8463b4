"""Names of the weights files photostyle knows, for commands that must not import torch to know them.

``service install`` checks that the service's account can read the cached weights;
importing :mod:`pipeline.engine.weights` for the file name would cost it 3 s of torch.
"""

TORCHVISION_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19, in its hub cache's checkpoints/
