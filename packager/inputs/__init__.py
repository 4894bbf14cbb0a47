"""Input contracts: what the model's inputs are to the user, decided before any graph pass runs.

  config  configuration inputs (a sample rate choosing a branch): which
          inputs are configuration, and fixing them at build time;
  image   ``--input-format image-uint8``: camera frames in, the user's
          normalisation folded into the model, and how an image input's
          axes and normalisation are read.

Calibration, preparation, the build and ``edgepack evaluate`` all read these;
they import nothing from the pipeline's stages.
"""
