import Foundation
import SyncCore

/// Rules for where a shared folder may live.
enum FolderPaths {
    struct PlacementError: Error, CustomStringConvertible {
        let description: String
    }

    /// Absolute, without "." / ".." / duplicate or trailing slashes.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for c in path.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { _ = parts.popLast(); continue }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Normalizes and resolves symlinks in the longest existing prefix, so two spellings of one
    /// directory are recognised as the same folder.
    static func resolve(_ raw: String) throws -> String {
        guard raw.hasPrefix("/") else { throw PlacementError(description: "folder path must be absolute: \(raw)") }
        var head = normalize(raw)
        var tail: [String] = []
        while head != "/" {
            if let real = realpath(head, nil) {
                defer { free(real) }
                let resolved = String(cString: real)
                return tail.isEmpty ? resolved : normalize(resolved + "/" + tail.reversed().joined(separator: "/"))
            }
            tail.append(String(head.split(separator: "/").last!))
            head = normalize(head + "/..")
        }
        return normalize("/" + tail.reversed().joined(separator: "/"))
    }

    static func checkPlacement(_ path: String, existing: [String], home: String) throws {
        if path == "/" { throw PlacementError(description: "refusing to share the root directory") }
        for other in existing {
            if other == path { throw PlacementError(description: "\(path) is already a shared folder") }
            if RelativePath.isWithin(String(path.dropFirst()), String(other.dropFirst())) {
                throw PlacementError(description: "\(path) is inside the shared folder \(other)")
            }
            if RelativePath.isWithin(String(other.dropFirst()), String(path.dropFirst())) {
                throw PlacementError(description: "\(path) contains the shared folder \(other)")
            }
        }
        let h = (try? resolve(home)) ?? home
        if RelativePath.isWithin(String(h.dropFirst()), String(path.dropFirst())) || RelativePath.isWithin(String(path.dropFirst()), String(h.dropFirst())) {
            throw PlacementError(description: "\(path) overlaps the daemon's home \(h)")
        }
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue {
            throw PlacementError(description: "\(path) exists and is not a directory")
        }
    }

    /// Creates the folder (if missing) and its `.syncd/` state directory.
    static func prepare(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: path + "/.syncd", withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw PlacementError(description: "cannot create \(path): \(error.localizedDescription)")
        }
    }
}
