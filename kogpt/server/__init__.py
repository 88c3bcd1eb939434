"""`kogpt serve`: an OpenAI-compatible completion API (Starlette, uvicorn, sse-starlette) on `KoGPT`.

`request` reads and checks a body, `runner` drives `KoGPT.stream()` from the event loop,
`completions` shapes OpenAI's replies, `app` routes and authorises, `vllm` builds the command line of
vLLM's own OpenAI server for `--engine vllm`.
"""
