"""Real photos into the latent space and back: load, detect, align, invert, edit, paste back.

Rooms in data-flow order: :mod:`~agelatent.photos.io` (files -> RGB arrays, every odd format handled or
refused), :mod:`~agelatent.photos.faces` (dlib's detector and five-point predictor; the crop the generator
was trained on), :mod:`~agelatent.photos.invert` (the latent that reproduces a crop), and
:mod:`~agelatent.photos.paste` (an edited face back into its photo). ``agelatent-edit`` ties them to the
editors (:mod:`agelatent.cli.edit`).
"""

from agelatent.photos.io import PhotoError, list_photos, load_photo

__all__ = ["PhotoError", "list_photos", "load_photo"]
