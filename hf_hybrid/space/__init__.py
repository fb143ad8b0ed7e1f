"""The demo Space: `search` holds its logic (collections, uploads, cached models and indexes, search),
`app` wires it to Gradio and serves it. spaces/hf-hybrid-demo/app.py launches it."""
