package android.net;

/** Stand-in of android.net.Uri: holds the string form. */
public class Uri implements android.os.Parcelable {
    private final String value;
    public Uri(String value) { this.value = value; }
    public static Uri parse(String s) { return new Uri(s); }
    public String toString() { return value; }
}
