package org.tensorflow.lite;

/** Stand-in for LiteRT's Tensor: shape, type and quantization parameters. */
public class Tensor {
    /** Stand-in for Tensor.QuantizationParams. */
    public static class QuantizationParams {
        private final float scale;
        private final int zeroPoint;

        public QuantizationParams(float scale, int zeroPoint) { this.scale = scale; this.zeroPoint = zeroPoint; }

        public float getScale() { return scale; }

        public int getZeroPoint() { return zeroPoint; }
    }

    private final int[] shape;
    private final DataType type;
    private final QuantizationParams q;

    Tensor(int[] shape, DataType type, float scale, int zero) {
        this.shape = shape; this.type = type; this.q = new QuantizationParams(scale, zero);
    }

    public int[] shape() { return shape; }

    public DataType dataType() { return type; }

    public QuantizationParams quantizationParams() { return q; }

    public int numElements() { int n = 1; for (int s : shape) n *= s; return n; }

    public int numBytes() { return numElements() * type.byteSize(); }
}
