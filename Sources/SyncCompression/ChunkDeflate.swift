import CompressNIO
import NIOConcurrencyHelpers
import NIOCore
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Per-chunk wire compression (Protocol/wire.md, "Compression"): raw deflate (RFC 1951, no zlib
/// header or Adler-32: the keyed chunk id already checks every byte) at zlib level 1, used for a
/// chunk only when it pays, and inflated on the receiving side to exactly the size that was asked.
///
/// zlib through adam-fowler/compress-nio: its `ZlibCompressor` / `ZlibDecompressor` are reusable
/// streams (reset, not re-initialised, per chunk) that write into a buffer of fixed capacity and
/// fail when the output does not fit — which is both the "does it pay" cap and the zip-bomb bound.
public enum ChunkDeflate {
    /// Chunks smaller than this go as they are: the few bytes saved are not worth a deflate call.
    public static let minimumSize = 512
    /// A deflated chunk is sent only when it is at most this fraction of the chunk (≥ 10 % smaller).
    public static let paysBelow = 0.9
    /// The sample test (`looksCompressible`) passes a chunk whose sampled bytes have at most this
    /// many bits of order-0 entropy per byte. Random or already compressed data measure ~7.9
    /// on the sample; text, SQL and logs 4.5–6 (Benchmarks/RESULTS.md, "Wire compression").
    public static let entropyLimit = 7.0
    /// Bytes the sample test looks at: 16 runs of 256 bytes spread over the chunk.
    static let sampleRuns = 16, sampleRun = 256

    /// What to send for `chunk`: its raw-deflate form when the chunk passes the sample test and
    /// deflates to at most `paysBelow` of its size, else nil (send it as it is).
    public static func deflateIfItPays(_ chunk: [UInt8]) -> [UInt8]? {
        guard chunk.count >= minimumSize, looksCompressible(chunk) else { return nil }
        return deflate(chunk, limit: Int(Double(chunk.count) * paysBelow))
    }

    /// A cheap guess, before spending a deflate on it: the order-0 entropy of a sample of the chunk
    /// (4 KiB in 16 runs, or all of a smaller chunk). Costs ~1 % of a level-1 deflate of the chunk,
    /// so incompressible data (media, archives, encrypted files) is sent at full speed.
    public static func looksCompressible(_ chunk: [UInt8]) -> Bool {
        entropy(ofSampleOf: chunk) <= entropyLimit
    }

    /// Bits per byte of the sampled bytes' histogram (0 … 8).
    public static func entropy(ofSampleOf chunk: [UInt8]) -> Double {
        var counts = [Int](repeating: 0, count: 256)
        var total = 0
        chunk.withUnsafeBufferPointer { p in
            counts.withUnsafeMutableBufferPointer { c in
                if p.count <= sampleRuns * sampleRun {
                    for b in p { c[Int(b)] += 1 }
                    total = p.count
                    return
                }
                let stride = (p.count - sampleRun) / (sampleRuns - 1)
                for run in 0..<sampleRuns {
                    let start = run * stride
                    for i in start..<start + sampleRun { c[Int(p[i])] += 1 }
                }
                total = sampleRuns * sampleRun
            }
        }
        guard total > 0 else { return 0 }
        var bits = 0.0
        let n = Double(total)
        for count in counts where count > 0 {
            let p = Double(count) / n
            bits -= p * log2(p)
        }
        return bits
    }

    /// `data` as raw deflate at level 1 if that takes at most `limit` bytes, else nil.
    public static func deflate(_ data: [UInt8], limit: Int) -> [UInt8]? {
        guard limit > 0 else { return nil }
        return compressors.use { compressor -> [UInt8]? in
            var input = ByteBuffer(bytes: data)
            var output = ByteBuffer()
            output.reserveCapacity(limit)
            do {
                try compressor.reset()
                try compressor.deflate(from: &input, to: &output, flush: .finish)
            } catch {
                return nil   // bufferOverflow: it does not fit in `limit`, so it does not pay
            }
            guard input.readableBytes == 0, output.readableBytes <= limit else { return nil }
            return output.readBytes(length: output.readableBytes)
        } ?? nil
    }

    /// Why a deflated chunk was refused.
    public enum InflateError: Error, Equatable, CustomStringConvertible {
        /// The stream is not valid deflate.
        case corrupt
        /// It inflates to more than `rawSize` bytes (a zip bomb, or a wrong size).
        case tooLong
        /// It ends (or is cut) before `rawSize` bytes.
        case tooShort(Int)
        /// Bytes follow the end of the deflate stream.
        case trailingBytes

        public var description: String {
            switch self {
            case .corrupt: "not a deflate stream"
            case .tooLong: "inflates past its announced size"
            case .tooShort(let n): "inflates to only \(n) bytes"
            case .trailingBytes: "bytes after the end of the deflate stream"
            }
        }
    }

    /// Exactly `rawSize` bytes from raw deflate: the output never grows past `rawSize + 1` bytes,
    /// however the input was made, so a hostile stream costs at most that much memory.
    public static func inflate(_ deflated: [UInt8], rawSize: Int) throws(InflateError) -> [UInt8] {
        let result: Result<[UInt8], InflateError> = decompressors.use { decompressor -> Result<[UInt8], InflateError> in
            var input = ByteBuffer(bytes: deflated)
            var output = ByteBuffer()
            output.reserveCapacity(rawSize + 1)
            do {
                try decompressor.reset()
                try decompressor.inflate(from: &input, to: &output)
            } catch let error as CompressNIOError {
                if error == .bufferOverflow { return .failure(.tooLong) }
                if error == .inputBufferOverflow { return .failure(.tooShort(output.readableBytes)) }
                return .failure(.corrupt)
            } catch {
                return .failure(.corrupt)
            }
            if output.readableBytes > rawSize { return .failure(.tooLong) }
            if output.readableBytes < rawSize { return .failure(.tooShort(output.readableBytes)) }
            if input.readableBytes > 0 { return .failure(.trailingBytes) }
            return .success(output.readBytes(length: rawSize) ?? [])
        } ?? .failure(.corrupt)
        return try result.get()
    }

    // zlib streams are costly to set up (~300 KB each for deflate): kept and reused, one per
    // concurrent user (sessions serve and pulls inflate on several threads at once).
    private static let compressors = Pool {
        try ZlibCompressor(algorithm: .deflate, configuration: .init(compressionLevel: .fastestCompression))
    }
    private static let decompressors = Pool { try ZlibDecompressor(algorithm: .deflate) }
}

/// Reusable zlib streams: taken under a lock, used outside it, put back. At most `keep` are kept.
private final class Pool<Stream>: @unchecked Sendable {
    private let lock = NIOLock()
    private var free: [Stream] = []
    private let make: () throws -> Stream
    private let keep = 8

    init(_ make: @escaping () throws -> Stream) { self.make = make }

    /// nil when no stream can be set up (zlib fails only when out of memory).
    func use<T>(_ body: (Stream) -> T) -> T? {
        guard let stream = lock.withLock({ free.popLast() }) ?? (try? make()) else { return nil }
        defer { lock.withLock { if free.count < keep { free.append(stream) } } }
        return body(stream)
    }
}
