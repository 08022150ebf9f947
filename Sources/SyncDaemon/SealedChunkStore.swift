import Foundation
import SyncCore

/// Sealed chunks on disk, one file per chunk id under the folder's `.syncd/sealed/`, written as
/// temp file + fsync + rename so a crash leaves either no file or the whole one.
struct SealedChunkStore: Sendable {
    let directory: String

    func path(_ id: ChunkID) -> String { directory + "/" + Hex.encode(id.bytes) }

    func read(_ id: ChunkID) -> [UInt8]? {
        FileManager.default.contents(atPath: path(id)).map { Array($0) }
    }

    func write(_ id: ChunkID, _ bytes: [UInt8]) throws {
        let target = path(id)
        if FileManager.default.fileExists(atPath: target) { return }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temp = target + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + written, raw.count - written)
                if n <= 0 { return false }
                written += n
            }
            return fsync(fd) == 0
        }
        close(fd)
        guard ok, rename(temp, target) == 0 else {
            let code = POSIXErrorCode(rawValue: errno) ?? .EIO
            unlink(temp)
            throw POSIXError(code)
        }
    }
}
