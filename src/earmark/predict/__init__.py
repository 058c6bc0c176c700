"""Predict: file and timeline logic, the torch and ONNX predictors, streaming, input resolution.

The ONNX path (`onnx_predictor`, `files`, `inputs`, `streaming`) imports neither torch nor lightning."""
