"""Task plug-ins, one module each; bert_tasks.registry imports every module here so each registers itself."""
