/// Rules for paths inside a folder: relative, '/'-separated, no empty, "." or ".." components,
/// no NUL, and never inside the folder's own `.syncd` state directory.
public enum RelativePath {
    public static let stateDirectory = ".syncd"

    public enum Problem: Error, Equatable, Sendable, CustomStringConvertible {
        case empty, absolute, emptyComponent, dotComponent, nul, stateDirectory, tooLong

        public var description: String {
            switch self {
            case .empty: return "path is empty"
            case .absolute: return "path is absolute"
            case .emptyComponent: return "path has an empty component"
            case .dotComponent: return "path has a '.' or '..' component"
            case .nul: return "path contains a NUL byte"
            case .stateDirectory: return "path is inside the folder's .syncd directory"
            case .tooLong: return "path is longer than 4096 bytes"
            }
        }
    }

    public static func validate(_ path: String) -> Problem? {
        let bytes = Array(path.utf8)
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
        guard path.hasPrefix(ancestor) else { return false }
        let rest = path.utf8.dropFirst(ancestor.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }
}
