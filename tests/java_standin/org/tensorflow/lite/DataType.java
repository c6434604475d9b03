package org.tensorflow.lite;

/** Stand-in for LiteRT's DataType enum (the names the Python bridge maps). */
public enum DataType {
    FLOAT32(4), INT32(4), UINT8(1), INT64(8), INT8(1), INT16(2), FLOAT16(2);

    private final int size;

    DataType(int size) { this.size = size; }

    public int byteSize() { return size; }
}
