/// Rules for paths inside a folder: relative, '/'-separated, no empty, "." or ".." components,
/// no NUL, and never inside the folder's own `.syncd` state directory. Paths are path text (see
/// the extension below); the rules apply to the bytes the text stands for.
public enum RelativePath {
    public static let stateDirectory = ".syncd"

    public enum Problem: Error, Equatable, Sendable, CustomStringConvertible {
        case empty, absolute, emptyComponent, dotComponent, nul, stateDirectory, tooLong, notText

        public var description: String {
            switch self {
            case .empty: return "path is empty"
            case .absolute: return "path is absolute"
            case .emptyComponent: return "path has an empty component"
            case .dotComponent: return "path has a '.' or '..' component"
            case .nul: return "path contains a NUL byte"
            case .stateDirectory: return "path is inside the folder's .syncd directory"
            case .tooLong: return "path is longer than 4096 bytes"
            case .notText: return "path is not in path-text form"
            }
        }
    }

    /// The first rule `path` (path text) breaks, nil when it is a valid path. The length limit
    /// counts the name's bytes, not its text.
    public static func validate(_ path: String) -> Problem? {
        guard let bytes = Self.bytes(path) else { return .notText }
        if bytes.isEmpty { return .empty }
        if bytes.count > 4096 { return .tooLong }
        if bytes.first == UInt8(ascii: "/") { return .absolute }
        if bytes.contains(0) { return .nul }
        for (i, component) in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).enumerated() {
            if component.isEmpty { return .emptyComponent }
            if component.elementsEqual(".".utf8) || component.elementsEqual("..".utf8) { return .dotComponent }
            if i == 0 && component.elementsEqual(stateDirectory.utf8) { return .stateDirectory }
        }
        return nil
    }

    /// "a/b/c" → "a/b"; "c" → "".
    public static func parent(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "" }
        return String(path[..<slash])
    }

    public static func join(_ dir: String, _ name: String) -> String {
        dir.isEmpty ? name : dir + "/" + name
    }

    /// True when `path` is `ancestor` or lies below it.
    public static func isWithin(_ path: String, _ ancestor: String) -> Bool {
        if ancestor.isEmpty { return true }
        guard path.utf8.starts(with: ancestor.utf8) else { return false }  // bytes, not Characters
        let rest = path.utf8.dropFirst(ancestor.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }
}

/// Paths are bytes. Linux names are byte strings (not necessarily UTF-8, never normalized), and
/// Swift `String` equality, hashing and ordering use Unicode canonical equivalence: "café" in NFC
/// and in NFD would be one key of a `Set<String>`. So inside syncd a path is carried in a `String`
/// in an ASCII-only *path text* form, which makes every comparison byte for byte:
///
/// - bytes 0x00–0x7F other than '%' stand for themselves;
/// - '%' and every byte 0x80–0xFF are written `%XX` (two upper-case hex digits).
///
/// The form is a bijection on byte strings, so equal texts are equal names and distinct names stay
/// distinct, and the order of two texts is a fixed total order. It is decoded exactly at the
/// boundaries: system calls (SyncFS), the wire (names travel as raw bytes, Protocol/manifest.md)
/// and what people read (`display`).
extension RelativePath {
    private static let hex = Array("0123456789ABCDEF".utf8)

    /// The path text of a name as the kernel gives it (bytes from readdir, inotify, argv).
    public static func text<Bytes: Sequence>(fromBytes bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount)
        for b in bytes {
            if b < 0x80 && b != UInt8(ascii: "%") {
                out.append(b)
            } else {
                out.append(UInt8(ascii: "%")); out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The path text of a name given as a Swift string (a literal, a CLI argument): its UTF-8 bytes.
    public static func text(fromUnicode name: String) -> String { text(fromBytes: name.utf8) }

    /// The bytes a path text stands for; nil when `text` is not in path-text form: a non-ASCII
    /// character, or a '%' not followed by the escape `text(fromBytes:)` writes (two upper-case
    /// hex digits of '%' or of a byte ≥ 0x80). Only the canonical spelling is accepted, so two
    /// distinct texts never stand for the same name ("%e9", "%41" and "%2F" are not path text).
    public static func bytes(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        var it = text.utf8.makeIterator()
        func digit(_ c: UInt8?) -> UInt8? {
            switch c {
            case .some(let c) where c >= 0x30 && c <= 0x39: return c - 0x30
            case .some(let c) where c >= 0x41 && c <= 0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        while let c = it.next() {
            if c >= 0x80 { return nil }
            if c != UInt8(ascii: "%") { out.append(c); continue }
            guard let hi = digit(it.next()), let lo = digit(it.next()) else { return nil }
            let b = hi << 4 | lo
            guard b >= 0x80 || b == UInt8(ascii: "%") else { return nil }
            out.append(b)
        }
        return out
    }

    /// Whether `text` is in path-text form (what `bytes` accepts).
    public static func isText(_ text: String) -> Bool { bytes(text) != nil }

    /// A path text as people read it: its bytes as UTF-8, invalid sequences shown as U+FFFD.
    public static func display(_ text: String) -> String {
        guard let b = bytes(text) else { return text }
        return String(decoding: b, as: UTF8.self)
    }
}
