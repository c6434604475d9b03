package androidx.core.content;

import android.content.Context;
import android.net.Uri;
import java.io.File;

/** Stand-in of androidx FileProvider: a content:// URI for a file, checked like the real one. */
public class FileProvider {
    public static Uri getUriForFile(Context context, String authority, File file) {
        if (!file.isFile()) throw new IllegalArgumentException("Failed to find configured root that contains " + file);
        return Uri.parse("content://" + authority + "/files/" + file.getName());
    }
}
