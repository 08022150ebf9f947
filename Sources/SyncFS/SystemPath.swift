#if canImport(Glibc)
import Glibc
#endif
import SyncCore

/// Where path text (`RelativePath`) meets the kernel. System calls take NUL-terminated bytes, and a
/// Swift `String` cannot hold a name that is not UTF-8, so paths go to the kernel as `[CChar]`
/// (which C functions take as `UnsafePointer<CChar>`: `lstat(SystemPath.absolute(root: r, p), &st)`)
/// and names come back through `text(name:)`, never through `String(cString:)`.
///
/// A string that is not path text (a bug upstream) is passed on as its UTF-8 bytes.
public enum SystemPath {
    /// `root` (an absolute path the user chose, as its UTF-8 bytes), "/", then the bytes `relative`
    /// (path text) stands for; NUL-terminated. `relative` "" is the root itself.
    public static func absolute(root: String, _ relative: String) -> [CChar] {
        var out = Array(root.utf8)
        if !relative.isEmpty {
            if out.last != UInt8(ascii: "/") { out.append(UInt8(ascii: "/")) }
            out += bytes(relative)
        }
        out.append(0)
        return out.map { CChar(bitPattern: $0) }
    }

    /// The bytes `relative` (path text) stands for, NUL-terminated: for the `*at` calls.
    public static func relative(_ relative: String) -> [CChar] {
        (bytes(relative) + [0]).map { CChar(bitPattern: $0) }
    }

    /// The path text of a NUL-terminated name from the kernel (`readdir`'s `d_name`, an inotify
    /// event's name, `readlink` output once terminated).
    public static func text(name: UnsafePointer<CChar>) -> String {
        let bytes = UnsafeRawPointer(name).assumingMemoryBound(to: UInt8.self)
        return RelativePath.text(fromBytes: UnsafeBufferPointer(start: bytes, count: strlen(name)))
    }

    /// The path text of a directory entry's name (what `readdir` returned).
    public static func text(of entry: UnsafePointer<dirent>) -> String {
        withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: MemoryLayout.size(ofValue: entry.pointee.d_name)) { text(name: $0) }
        }
    }

    private static func bytes(_ text: String) -> [UInt8] {
        RelativePath.bytes(text) ?? Array(text.utf8)
    }
}
