import Dispatch
import SyncCore
import SyncSecurity

/// Cuts a file into FastCDC chunks and computes their keyed ids, streaming it through a few
/// fixed buffers (never the whole file in memory). Large files are pipelined: while the calling
/// thread reads and cuts buffer N, other cores compute the HMACs of buffer N-1's chunks.
public final class FileHasher: @unchecked Sendable {
    public let chunker: FastCDC
    public let ids: ChunkHasher
    /// Bytes per pipeline buffer; files up to this size are hashed inline on the calling thread.
    public let bufferSize: Int
    private let depth = 3
    private let hashQueue = DispatchQueue(label: "syncd.hash", attributes: .concurrent)

    public init(chunker: FastCDC, ids: ChunkHasher, bufferSize: Int = 4 << 20) {
        precondition(bufferSize >= 2 * chunker.parameters.maxSize)
        self.chunker = chunker
        self.ids = ids
        self.bufferSize = bufferSize
    }

    public struct Result: Sendable {
        public var chunks: [ChunkRef]
        public var size: Int64
    }

    /// Hashes everything `reader` yields until end of file.
    public func hash(_ reader: any FileReader, expectedSize: Int64) throws -> Result {
        if expectedSize < Int64(bufferSize) { return try hashSmall(reader, expectedSize: Int(expectedSize)) }
        return try hashPipelined(reader)
    }

    private func hashSmall(_ reader: any FileReader, expectedSize: Int) throws -> Result {
        // One extra byte reveals a file that grew since it was stat'ed.
        let capacity = max(expectedSize + 1, 64)
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 64)
        defer { buf.deallocate() }
        let filled = try fill(reader, buf, from: 0)
        if filled == capacity {  // grew past the stat size: fall back to streaming the rest
            return try hashPipelined(reader, prefix: UnsafeRawBufferPointer(buf))
        }
        var chunks: [ChunkRef] = []
        var at = 0
        while at < filled {
            let rest = UnsafeRawBufferPointer(rebasing: buf[at..<filled])
            let n = chunker.cut(rest, isFinal: true)
            chunks.append(ChunkRef(id: ids.chunkID(UnsafeRawBufferPointer(rebasing: rest[0..<n])), size: UInt32(n)))
            at += n
        }
        return Result(chunks: chunks, size: Int64(filled))
    }

    private final class Batch: @unchecked Sendable {
        let buffer: UnsafeMutableRawBufferPointer
        var cuts: [(offset: Int, length: Int)] = []
        var results: UnsafeMutableBufferPointer<ChunkRef>
        var consumedEnd = 0      // end of the last complete chunk; bytes after it carry over
        var collected = true     // results already appended to the file's chunk list
        let group = DispatchGroup()

        init(size: Int) {
            buffer = .allocate(byteCount: size, alignment: 64)
            results = .allocate(capacity: 0)
        }

        deinit {
            buffer.deallocate()
            results.deallocate()
        }
    }

    private func hashPipelined(_ reader: any FileReader, prefix: UnsafeRawBufferPointer? = nil) throws -> Result {
        let batches = (0..<depth).map { _ in Batch(size: bufferSize) }
        var chunks: [ChunkRef] = []
        var total: Int64 = 0
        var carry = 0          // bytes at the end of the previous buffer that did not form a chunk yet
        var pendingPrefix = prefix
        var k = 0
        var eof = false
        defer { for b in batches { b.group.wait() } }

        while !eof {
            let batch = batches[k % depth]
            let previous = batches[(k + depth - 1) % depth]
            batch.group.wait()
            collect(batch, into: &chunks)
            if carry > 0 {
                batch.buffer.baseAddress!.copyMemory(from: previous.buffer.baseAddress! + previous.consumedEnd, byteCount: carry)
            }
            var filled = carry
            if let p = pendingPrefix {
                batch.buffer.baseAddress!.advanced(by: filled).copyMemory(from: p.baseAddress!, byteCount: p.count)
                filled += p.count
                total += Int64(p.count)
                pendingPrefix = nil
            }
            let before = filled
            filled = try fill(reader, batch.buffer, from: filled)
            total += Int64(filled - before)
            eof = filled < batch.buffer.count

            var at = 0
            batch.cuts.removeAll(keepingCapacity: true)
            while at < filled {
                let rest = UnsafeRawBufferPointer(rebasing: batch.buffer[at..<filled])
                if !eof && rest.count < chunker.parameters.maxSize { break }
                let n = chunker.cut(rest, isFinal: eof)
                batch.cuts.append((at, n))
                at += n
            }
            batch.consumedEnd = at
            carry = filled - at
            dispatch(batch)
            k += 1
        }
        for i in 0..<depth { let b = batches[(k + i) % depth]; b.group.wait(); collect(b, into: &chunks) }
        return Result(chunks: chunks, size: total)
    }

    /// Splits a buffer's chunks into two halves hashed concurrently (2 cores here).
    private func dispatch(_ batch: Batch) {
        batch.results.deallocate()
        batch.results = .allocate(capacity: batch.cuts.count)
        let count = batch.cuts.count
        let parts = count < 2 ? 1 : 2
        for part in 0..<parts {
            let range = (count * part / parts)..<(count * (part + 1) / parts)
            hashQueue.async(group: batch.group) { [ids] in
                for i in range {
                    let c = batch.cuts[i]
                    let id = ids.chunkID(UnsafeRawBufferPointer(rebasing: batch.buffer[c.offset..<c.offset + c.length]))
                    (batch.results.baseAddress! + i).initialize(to: ChunkRef(id: id, size: UInt32(c.length)))
                }
            }
        }
        batch.collected = false
    }

    private func collect(_ batch: Batch, into chunks: inout [ChunkRef]) {
        guard !batch.collected else { return }
        chunks.append(contentsOf: UnsafeBufferPointer(start: batch.results.baseAddress, count: batch.cuts.count))
        batch.collected = true
    }

    private func fill(_ reader: any FileReader, _ buf: UnsafeMutableRawBufferPointer, from start: Int) throws -> Int {
        var filled = start
        while filled < buf.count {
            let n = try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: buf[filled...]))
            if n == 0 { break }
            filled += n
        }
        return filled
    }
}
