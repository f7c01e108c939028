// The exported network (diffusion_core export-web) as the samplers call it: net(feeds, batch) -> Float32Array.
// ``ort`` is onnxruntime-web in the page and onnxruntime-node in the parity test; the inputs are those the model's
// JSON lists (x, t, then the condition fields the network reads: labels, known, uncond, image, guidance).

export function ortNet(ort, session, m) {
  const C = m.channels, S = m.image_size, L = m.label_names.length, cc = m.cond_channels;
  const dims = {
    x: (b) => [b, C, S, S], t: (b) => [b], labels: (b) => [b, L], known: (b) => [b, L], uncond: (b) => [b],
    image: (b) => [b, cc, S, S], guidance: (b) => [b], aug_level: (b) => [b],
  };
  const absent = {       // what the package's flat_inputs sends for a field it was not given
    labels: (b) => new Float32Array(b * L), known: (b) => new Float32Array(b * L).fill(1),
    uncond: (b) => new Uint8Array(b), guidance: (b) => new Float32Array(b).fill(1),
    image: (b) => new Float32Array(b * cc * S * S), aug_level: (b) => new Float32Array(b),
  };
  return async (feeds, b) => {
    const inputs = {};
    for (const name of m.inputs) {
      const v = feeds[name] ?? absent[name](b);
      inputs[name] = new ort.Tensor(name === 'uncond' ? 'bool' : 'float32', v, dims[name](b));
    }
    const out = await session.run(inputs);
    return out.out.data;
  };
}
