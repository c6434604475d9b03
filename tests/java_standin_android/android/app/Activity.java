package android.app;

/** Stand-in of android.app.Activity. */
public class Activity extends android.content.Context {}
