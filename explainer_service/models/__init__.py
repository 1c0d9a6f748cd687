"""Face models: readers and converters of model files, and the runtimes that embed faces."""
