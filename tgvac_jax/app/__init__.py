"""The web page over a trained model (configs/app.py): the inference job's code behind a Gradio page."""
