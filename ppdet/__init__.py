"""ppdet: detectors and their compression on PaddlePaddle."""
import warnings

# Noise Paddle prints at import on every run (no C++ build happens here); keep CLI errors
# to the one line they are meant to be.
warnings.filterwarnings("ignore", message=".*ccache.*")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
