package org.tensorflow.lite;

import java.io.File;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Map;

/**
 * Test stand-in for LiteRT's org.tensorflow.lite.Interpreter: the API surface LeukEdge's
 * pyjnius bridge calls, with a small deterministic "model" so the Python side's marshalling
 * (quantize -> bytes -> ByteBuffer -> runSignature -> bytes -> dequantize) can be checked.
 *
 * Model on an input image x (1, S, S, 3):
 *   probability[0, 0] = sigmoid(mean(x))                       (1, 1)
 *   features[0, c]    = mean over pixels of x[..., c]          (1, 3)
 *   cam[0, i, j]      = relu(x[0, i, j, 0] - x[0, i, j, 2])    (1, S, S)
 * System property standin.dtype = FLOAT32 (default) or INT8 (full-integer I/O), standin.size = S.
 */
public final class Interpreter implements AutoCloseable {
    /** Stand-in for Interpreter.Options. */
    public static class Options {
        int threads = -1;

        public Options setNumThreads(int n) { threads = n; return this; }
    }

    private final int size;
    private final boolean int8;
    private final Tensor input;
    private final Tensor probability;
    private final Tensor features;
    private final Tensor cam;
    public int runs = 0;
    public int threads;

    public Interpreter(File model, Options options) {
        if (!model.isFile()) throw new IllegalArgumentException("model file not found: " + model);
        size = Integer.parseInt(System.getProperty("standin.size", "8"));
        int8 = "INT8".equals(System.getProperty("standin.dtype", "FLOAT32"));
        threads = options.threads;
        DataType t = int8 ? DataType.INT8 : DataType.FLOAT32;
        input = new Tensor(new int[] {1, size, size, 3}, t, int8 ? 1f / 128f : 0f, 0);
        probability = new Tensor(new int[] {1, 1}, t, int8 ? 1f / 256f : 0f, int8 ? -128 : 0);
        features = new Tensor(new int[] {1, 3}, t, int8 ? 1f / 128f : 0f, 0);
        cam = new Tensor(new int[] {1, size, size}, t, int8 ? 1f / 64f : 0f, int8 ? -128 : 0);
    }

    public String[] getSignatureKeys() { return new String[] {"serving_default"}; }

    public String[] getSignatureInputs(String key) { return new String[] {"image"}; }

    public String[] getSignatureOutputs(String key) { return new String[] {"cam", "features", "probability"}; }

    public Tensor getInputTensorFromSignature(String name, String key) {
        if (!"image".equals(name)) throw new IllegalArgumentException("no input " + name);
        return input;
    }

    public Tensor getOutputTensorFromSignature(String name, String key) {
        switch (name) {
            case "probability": return probability;
            case "features": return features;
            case "cam": return cam;
            default: throw new IllegalArgumentException("no output " + name);
        }
    }

    private float read(ByteBuffer b, int i) {
        if (!int8) return b.getFloat(i * 4);
        return (b.get(i) - input.quantizationParams().getZeroPoint()) * input.quantizationParams().getScale();
    }

    private void write(ByteBuffer b, Tensor t, int i, float v) {
        if (!int8) { b.putFloat(i * 4, v); return; }
        Tensor.QuantizationParams q = t.quantizationParams();
        long r = Math.round(v / q.getScale()) + q.getZeroPoint();
        b.put(i, (byte) Math.max(-128, Math.min(127, r)));
    }

    public void runSignature(Map<String, Object> inputs, Map<String, Object> outputs, String key) {
        if (!"serving_default".equals(key)) throw new IllegalArgumentException("no signature " + key);
        ByteBuffer in = ((ByteBuffer) inputs.get("image")).duplicate().order(ByteOrder.nativeOrder());
        if (in.capacity() != input.numBytes())
            throw new IllegalArgumentException("input has " + in.capacity() + " bytes, expected " + input.numBytes());
        int n = size * size;
        double total = 0;
        double[] ch = new double[3];
        for (int p = 0; p < n; p++)
            for (int c = 0; c < 3; c++) { float v = read(in, p * 3 + c); total += v; ch[c] += v; }
        ByteBuffer prob = (ByteBuffer) outputs.get("probability");
        ByteBuffer feat = (ByteBuffer) outputs.get("features");
        ByteBuffer map = (ByteBuffer) outputs.get("cam");
        if (prob.capacity() != probability.numBytes() || feat.capacity() != features.numBytes()
                || map.capacity() != cam.numBytes())
            throw new IllegalArgumentException("output buffer sizes do not match the tensors");
        write(prob, probability, 0, (float) (1.0 / (1.0 + Math.exp(-total / (3.0 * n)))));
        for (int c = 0; c < 3; c++) write(feat, features, c, (float) (ch[c] / n));
        for (int p = 0; p < n; p++) write(map, cam, p, Math.max(0f, read(in, p * 3) - read(in, p * 3 + 2)));
        runs++;
    }

    public void run(Object input, Object output) {
        throw new UnsupportedOperationException("the LeukEdge bridge uses runSignature");
    }

    @Override
    public void close() {}
}
