package android.os;

/** Stand-in of android.os.Parcelable (marker interface). */
public interface Parcelable {}
