import SyncCore

/// The narrow view of a folder's filesystem that scanning needs. Paths are relative to the
/// folder root ("" is the root itself), '/'-separated, in path text (`RelativePath`): names are
/// bytes, and `list` returns them, and `FileMetadata.symlinkTarget`, as path text. Implementations: `POSIXFileSystem`
/// (the real disk) and `FakeFileSystem` (in memory, for tests).
public protocol FileSystem: Sendable {
    /// lstat: metadata of the path itself (symlinks are never followed), nil when it does not exist.
    func metadata(_ path: String) throws -> FileMetadata?
    /// Names in a directory (no "." or ".."), in no particular order.
    func list(_ directory: String) throws -> [String]
    /// Opens a regular file for reading without following a final symlink.
    func openForReading(_ path: String) throws -> any FileReader
}

public protocol FileReader: AnyObject {
    /// Reads up to `buffer.count` bytes; 0 at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
    /// fstat of the open file.
    func metadata() throws -> FileMetadata
    func close()
}

public struct FileSystemError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var operation: String
    public var errno: Int32
    public var message: String

    public init(path: String, operation: String, errno: Int32, message: String) {
        self.path = path; self.operation = operation; self.errno = errno; self.message = message
    }

    public var description: String { "\(operation) \(path.isEmpty ? "." : RelativePath.display(path)): \(message)" }
}

extension FileSystem {
    /// Reads a whole small file (e.g. `.syncignore`); nil when missing.
    public func readSmallFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8]? {
        guard let m = try metadata(path), m.kind == .file else { return nil }
        let reader = try openForReading(path)
        defer { reader.close() }
        var out = [UInt8](repeating: 0, count: min(Int(m.size), limit))
        var filled = 0
        while filled < out.count {
            let n = try out.withUnsafeMutableBytes { try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            if n == 0 { break }
            filled += n
        }
        return Array(out[..<filled])
    }
}
