#if canImport(Glibc)
import Glibc
#endif
import SyncCore

/// The real filesystem under a folder root. Every path is resolved relative to the root and
/// opened with O_NOFOLLOW where it matters, so a symlink in the folder never leads the daemon out.
public struct POSIXFileSystem: FileSystem {
    public let root: String

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    public func absolute(_ path: String) -> String {
        path.isEmpty ? root : root + "/" + path
    }

    public func metadata(_ path: String) throws -> FileMetadata? {
        var st = stat()
        let full = absolute(path)
        if lstat(full, &st) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw Self.error(path, "lstat")
        }
        var m = Self.metadata(st)
        guard let kind = m?.kind else { return nil }  // sockets, fifos, devices are not synced
        if kind == .symlink { m!.symlinkTarget = try readLink(path) }
        return m
    }

    public func list(_ directory: String) throws -> [String] {
        guard let dir = opendir(absolute(directory)) else { throw Self.error(directory, "opendir") }
        defer { closedir(dir) }
        var names: [String] = []
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: ent.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }

    /// O_NOATIME (Linux, needs _GNU_SOURCE in C so Glibc does not export it): reading to hash
    /// must not dirty inodes.
    static let noatime: Int32 = 0o1000000

    public func openForReading(_ path: String) throws -> any FileReader {
        let fd = open(absolute(path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | Self.noatime)
        if fd >= 0 { return POSIXFileReader(fd: fd, path: path) }
        if errno == EPERM {  // O_NOATIME needs ownership; retry without it
            let fd2 = open(absolute(path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            if fd2 >= 0 { return POSIXFileReader(fd: fd2, path: path) }
        }
        throw Self.error(path, "open")
    }

    func readLink(_ path: String) throws -> String {
        var buf = [CChar](repeating: 0, count: 4097)
        let n = readlink(absolute(path), &buf, 4096)
        if n < 0 { throw Self.error(path, "readlink") }
        return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func metadata(_ st: stat) -> FileMetadata? {
        let kind: FileKind
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK: kind = .symlink
        default: return nil
        }
        return FileMetadata(kind: kind, size: kind == .directory ? 0 : Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                            mtimeNs: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec),
                            ctimeNs: Int64(st.st_ctim.tv_sec) * 1_000_000_000 + Int64(st.st_ctim.tv_nsec),
                            inode: UInt64(st.st_ino))
    }

    static func error(_ path: String, _ op: String, _ code: Int32 = errno) -> FileSystemError {
        FileSystemError(path: path, operation: op, errno: code, message: String(cString: strerror(code)))
    }
}

final class POSIXFileReader: FileReader {
    private var fd: Int32
    private let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
    }

    deinit { close() }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw POSIXFileSystem.error(path, "read")
        }
    }

    func metadata() throws -> FileMetadata {
        var st = stat()
        if fstat(fd, &st) != 0 { throw POSIXFileSystem.error(path, "fstat") }
        guard let m = POSIXFileSystem.metadata(st) else {
            throw FileSystemError(path: path, operation: "fstat", errno: EINVAL, message: "not a regular file")
        }
        return m
    }

    func close() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
    }
}
