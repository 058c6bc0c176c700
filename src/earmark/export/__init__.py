"""Export: ONNX with the front-end inside the graph, INT8 quantization, parity against PyTorch."""
