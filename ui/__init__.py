"""Gradio tabs of the app. Each `build_*_tab(ctx, ...)` is called inside a `gr.Tab`; handlers
stay thin and call `chatbot/` (engines, personas, store) and `eval/`."""
