package android.content;

/** Stand-in of android.content.Context: the calls the share code makes. */
public class Context {
    public String packageName = "org.leukedge.leukedge";
    public Intent started = null;
    public String getPackageName() { return packageName; }
    public void startActivity(Intent intent) { started = intent; }
}
