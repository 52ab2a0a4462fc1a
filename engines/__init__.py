"""Everything that generates: the local transformers engine, the batched engine, remote servers, the
model's child process, ZeroGPU, the engine pool, and the one factory that picks among them
(`engines.factory.load_engine`); their settings, light to import, in `engines.config`."""
