import ArgumentParser
import Foundation
import SyncCore
import SyncDaemon
import SyncFS
import SyncSecurity

/// `syncd bench`: the ceilings to know before trusting a throughput figure (Docs/Operations.md,
/// "Benchmarking with syncd bench"). Each prints one line for people, or one JSON object with
/// `--json`. MB and GB are 10^6 and 10^9 bytes; MiB 2^20.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure what bounds sync throughput: durable writes, hashing, the network to a peer.",
        discussion: """
            syncd bench disk PATH: the durable write ceiling of the file system holding PATH (a shared folder, say). \
            syncd bench hash: chunking and chunk ids per second on this CPU. Neither needs the daemon. \
            syncd bench peer PEER: transfer throughput and round trip to a connected peer, through the running \
            daemon's encrypted session (Docs/Operations.md).
            """,
        subcommands: [BenchDisk.self, BenchHash.self, BenchPeer.self])
}

/// What sync can get from one peer: the running daemon pulls scratch bytes (no folder data, nothing
/// written) over its live session with the peer, the way it pulls chunks (PeerBench, Protocol/wire.md "Bench").
struct BenchPeer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "peer",
        abstract: "Pull N MiB of scratch data from a connected peer over its session; report MB/s and the round trip.",
        discussion: """
            The peer answers from a fixed buffer in memory: nothing is read from or written to either folder. \
            The bytes cross the same encrypted session as chunks, a window of 1 MiB requests in flight, so the \
            figure is what sync can get from that peer. Needs the daemon, and a session with the peer in the folder.
            """)

    @OptionGroup var home: HomeOption

    @Argument(help: "The peer: its device id, or a prefix of it that names one peer (the name `syncd status` shows).")
    var peer: String

    @Option(help: "The shared folder whose session to use (default: the only shared folder).")
    var folder: String?

    @Option(help: "MiB to pull.")
    var size: Int = 256

    @ArgumentParser.Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard size >= 1, size <= 4096 else { throw ValidationError("--size must be from 1 to 4096 MiB") }
    }

    func run() throws {
        // The daemon ends a run itself (no answer for 10 s, a session that ends): wait as long as it runs.
        let response = try call(ControlRequest(command: .benchPeer, path: folder.map(absolutePath), peer: peer, bytes: Int64(size) << 20),
                                home: home.resolved, timeout: 86_400)
        guard let report = response.bench else { throw CLIError("the daemon sent no bench report") }
        if json {
            print(try benchJSON(report))
        } else {
            let name = (try? DeviceID(parsing: report.peer))?.name ?? report.peer
            print("peer \(name) over \(report.folder): \(size) MiB in \(fixed(report.seconds, 2)) s: \(fixed(report.mbPerSecond, 1)) MB/s; "
                  + "rtt \(fixed(report.rttMilliseconds, 2)) ms (median of 5)")
        }
    }
}

/// Durable write throughput where a folder lives: sequential writes ended by fsync, and the
/// latency of one small write made durable (what a batch of small files pays per file).
struct BenchDisk: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disk",
        abstract: "Write N MiB with fsync in PATH's file system and report MB/s and fsync latency.")

    @Argument(help: "A directory on the file system to measure, e.g. a shared folder (a scratch file is made and removed there).")
    var path: String = "."

    @Option(help: "MiB to write.")
    var size: Int = 256

    @ArgumentParser.Flag(help: "Print one JSON object.")
    var json = false

    struct Report: Codable, Equatable {
        var bench = "disk"
        var path: String
        var bytes: Int64
        /// Writing and the final fsync, in seconds.
        var seconds: Double
        var mbPerSecond: Double
        /// Median time of a 4 KiB write followed by fsync, in milliseconds (16 of them).
        var fsyncMilliseconds: Double
    }

    func validate() throws {
        guard size >= 1, size <= 1 << 20 else { throw ValidationError("--size must be from 1 to 1048576 MiB") }
    }

    func run() throws {
        let directory = absolutePath(path)
        var vfs = statvfs()
        guard statvfs(directory, &vfs) == 0 else { throw CLIError("\(directory): \(String(cString: strerror(errno)))") }
        let bytes = Int64(size) << 20
        let free = Int64(vfs.f_bavail) * Int64(vfs.f_frsize)
        guard free > bytes + (64 << 20) else {
            throw CLIError("\(directory): \(free >> 20) MiB free; --size \(size) needs \(size + 64) MiB")
        }
        let scratch = directory + "/.syncd-bench-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(scratch, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CLIError("cannot create a scratch file in \(directory): \(String(cString: strerror(errno)))") }
        defer { close(fd); unlink(scratch) }
        // Random bytes: a file system that compresses or deduplicates must not flatter the figure.
        var block = [UInt8](repeating: 0, count: 1 << 20)
        for i in stride(from: 0, to: block.count, by: 8) {
            withUnsafeBytes(of: UInt64.random(in: 0...UInt64.max)) { block.replaceSubrange(i..<i + 8, with: $0) }
        }
        let start = DispatchTime.now()
        for _ in 0..<size { try writeAll(fd, block, scratch) }
        guard fsync(fd) == 0 else { throw CLIError("fsync \(scratch): \(String(cString: strerror(errno)))") }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        var latencies: [Double] = []
        for _ in 0..<16 {
            let t = DispatchTime.now()
            try writeAll(fd, Array(block.prefix(4096)), scratch)
            guard fsync(fd) == 0 else { throw CLIError("fsync \(scratch): \(String(cString: strerror(errno)))") }
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e6)
        }
        let report = Report(path: directory, bytes: bytes, seconds: seconds, mbPerSecond: Double(bytes) / 1e6 / seconds,
                            fsyncMilliseconds: latencies.sorted()[latencies.count / 2])
        if json {
            print(try benchJSON(report))
        } else {
            print("disk \(directory): \(size) MiB written and fsynced in \(fixed(seconds, 2)) s: \(fixed(report.mbPerSecond, 1)) MB/s; "
                  + "a 4 KiB write + fsync takes \(fixed(report.fsyncMilliseconds, 2)) ms (median of 16)")
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CLIError("write \(path): \(String(cString: strerror(errno)))") }
            done += n
        }
    }
}

/// What the scanner and the puller spend per byte: the same FastCDC cuts and keyed chunk ids
/// (`FileHasher`, the scanner's pipelined path) over an in-memory buffer, so no disk is involved.
struct BenchHash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash",
        abstract: "Chunk and hash N MiB in memory with syncd's own chunker and chunk ids; report GB/s.")

    @Option(help: "MiB to hash.")
    var size: Int = 512

    @ArgumentParser.Flag(help: "Print one JSON object.")
    var json = false

    struct Report: Codable, Equatable {
        var bench = "hash"
        var bytes: Int64
        /// FastCDC cuts alone.
        var chunkGBPerSecond: Double
        /// Cuts and chunk ids (HMAC-SHA-256), as a scan does them.
        var chunkAndIDGBPerSecond: Double
        var chunks: Int
        var averageChunkBytes: Int
        var cores: Int
    }

    func validate() throws {
        guard size >= 1, size <= 1 << 16 else { throw ValidationError("--size must be from 1 to 65536 MiB") }
    }

    func run() throws {
        let keys = FolderSecret.generate().keys
        guard let gear = keys.chunkerGear, let idKey = keys.chunkIDKey else { throw CLIError("a read-write secret has no chunker keys") }
        let chunker = FastCDC(gear: gear)
        let bytes = size << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
        defer { buffer.deallocate() }
        var state = UInt64.random(in: 1...UInt64.max)
        for i in stride(from: 0, to: bytes, by: 8) {   // xorshift: incompressible, and fast to make
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            buffer.storeBytes(of: state, toByteOffset: i, as: UInt64.self)
        }
        var start = DispatchTime.now()
        var at = 0, cuts = 0
        while at < bytes {
            at += chunker.cut(UnsafeRawBufferPointer(rebasing: buffer[at...]), isFinal: true)
            cuts += 1
        }
        let chunkSeconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        let hasher = FileHasher(chunker: chunker, ids: ChunkHasher(key: idKey))
        start = DispatchTime.now()
        let result = try hasher.hash(MemoryReader(UnsafeRawBufferPointer(buffer)), expectedSize: Int64(bytes))
        let hashSeconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        guard result.size == Int64(bytes), result.chunks.count == cuts else {
            throw CLIError("the hasher saw \(result.size) bytes in \(result.chunks.count) chunks, the chunker \(bytes) in \(cuts)")
        }
        let report = Report(bytes: Int64(bytes), chunkGBPerSecond: Double(bytes) / 1e9 / chunkSeconds,
                            chunkAndIDGBPerSecond: Double(bytes) / 1e9 / hashSeconds, chunks: cuts,
                            averageChunkBytes: bytes / cuts, cores: ProcessInfo.processInfo.activeProcessorCount)
        if json {
            print(try benchJSON(report))
        } else {
            print("hash: \(size) MiB in \(cuts) chunks (average \(report.averageChunkBytes >> 10) KiB): chunking \(fixed(report.chunkGBPerSecond, 2)) GB/s, "
                  + "chunking + chunk ids \(fixed(report.chunkAndIDGBPerSecond, 2)) GB/s (\(report.cores) cores)")
        }
    }

    /// A `FileReader` over memory.
    final class MemoryReader: FileReader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0
        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = min(buffer.count, bytes.count - offset)
            if n > 0 { buffer.baseAddress!.copyMemory(from: bytes.baseAddress! + offset, byteCount: n) }
            offset += n
            return n
        }
        func metadata() throws -> FileMetadata {
            FileMetadata(kind: .file, size: Int64(bytes.count), mode: 0o600, mtimeNs: 0, ctimeNs: 0, inode: 0)
        }
        func close() {}
    }
}

private func benchJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

private func fixed(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
