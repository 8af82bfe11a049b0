"""File formats and network ports: readers of other tools' model files and our torch re-implementations of
their networks, each checked against the original numerically (tests/test_identity_port.py, test_align.py,
test_agender.py).

* :mod:`~agelatent.ports.dlib_format` -- dlib's serialised ``.dat`` files (the face ResNet, shape predictors);
* :mod:`~agelatent.ports.dlib_resnet` -- dlib's face-recognition ResNet in torch;
* :mod:`~agelatent.ports.shape_predictor` -- dlib's five-point shape predictor, batched in torch;
* :mod:`~agelatent.ports.keras_hdf5` -- Keras 2 full-model HDF5 files run in torch (the independent age model).

The perceptions (:mod:`agelatent.perception`) use these; nothing here knows about worlds or editing.
"""
