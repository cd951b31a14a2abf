"""ONNX export of the voxtok codec (onnx_export, needs torch + the `onnx` extra) and a torch-free streaming
runtime on onnxruntime + numpy (runtime). Importing this package imports neither."""
