"""Graph transforms.

The functional form lives in its module (`gattn.transforms.laplacian_pe.laplacian_pe`);
exporting it here would shadow the module of the same name.
"""

from .laplacian_pe import LaplacianPE, RandomSignFlip, random_sign_flip

__all__ = ["LaplacianPE", "RandomSignFlip", "random_sign_flip"]
