"""Network definitions: the from-scratch CNN, transfer backbones and dlib's face ResNet in PyTorch."""
