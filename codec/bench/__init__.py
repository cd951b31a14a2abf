"""Speed and latency benchmarks (`voxtok bench`): the timing harness (speed), the systems it times
(backends: voxtok on PyTorch and ONNX Runtime; peers: other codecs with random weights) and the report."""
