"""Deployment of metagna-tf models: SavedModel and ONNX/TFLite exports, REST client, Gradio app."""
