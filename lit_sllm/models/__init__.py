"""The one model, `SpeechLLM`, and the parts it is built from."""
