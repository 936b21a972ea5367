"""The analyst's reranking page (Gradio), talking to the rerank server over HTTP.

Run it with `python -m webui --server-url URL`; build it in code with
`webui.app.create_demo(webui.settings.Settings(...))`.
"""
