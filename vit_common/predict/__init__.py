"""Images to model inputs (preprocess) and where a model looks (attention_maps). Numpy, Pillow, matplotlib."""
