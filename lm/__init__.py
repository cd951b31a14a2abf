"""voxtok speech LM: a transformer over the 12.5 Hz tokenizer's tokens (voxtok.lm.model), discrete and continuous."""
