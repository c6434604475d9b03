package android.content;

import java.util.HashMap;

/** Stand-in of android.content.Intent with the real constants and the overloads pyjnius must choose from. */
public class Intent {
    public static final String ACTION_SEND = "android.intent.action.SEND";
    public static final String ACTION_CHOOSER = "android.intent.action.CHOOSER";
    public static final String EXTRA_STREAM = "android.intent.extra.STREAM";
    public static final String EXTRA_INTENT = "android.intent.extra.INTENT";
    public static final String EXTRA_TITLE = "android.intent.extra.TITLE";
    public static final int FLAG_GRANT_READ_URI_PERMISSION = 0x00000001;

    public String action;
    public String type = null;
    public int flags = 0;
    public HashMap<String, Object> extras = new HashMap<>();

    public Intent(String action) { this.action = action; }
    public String getAction() { return action; }
    public String getType() { return type; }
    public int getFlags() { return flags; }
    public Intent setType(String type) { this.type = type; return this; }
    public Intent addFlags(int f) { flags |= f; return this; }
    public Intent putExtra(String name, String value) { extras.put(name, value); return this; }
    public Intent putExtra(String name, int value) { extras.put(name, value); return this; }
    public Intent putExtra(String name, android.os.Parcelable value) { extras.put(name, value); return this; }
    public Intent putExtra(String name, CharSequence value) { extras.put(name, value); return this; }
    public Object getExtra(String name) { return extras.get(name); }
    public static Intent createChooser(Intent target, CharSequence title) {
        Intent c = new Intent(ACTION_CHOOSER);
        c.extras.put(EXTRA_INTENT, target);
        c.extras.put(EXTRA_TITLE, title);
        return c;
    }
}
