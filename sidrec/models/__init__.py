"""Models: loading (`loading`), SID tokens (`sid_tokens`), the offline tiny model and tokenizer (`tiny`), the Qwen2.5
stand-in (`standin`), SID-embedding initialisation (`sid_init`), dropout surgery (`dropout`), checkpoint metadata
(`metadata`) and checkpoint averaging (`averaging`)."""
