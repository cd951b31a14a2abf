"""Building blocks of the codec: causal streaming convs, ConvNeXt blocks, the iSTFT head."""
