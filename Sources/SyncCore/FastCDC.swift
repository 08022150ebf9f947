/// Content-defined chunking, FastCDC as published in 2020 (Xia et al., "The Design of Fast
/// Content-Defined Chunking for Data Deduplication Based Storage Systems", IEEE TPDS 31(9)):
///
/// - **Gear hash**: `fp = (fp << 1) + gear[byte]`. Bit *k* of `fp` depends on the last *k + 1* bytes,
///   so the masks below only use high bits, which see a full 48-byte window or more.
/// - **Cut-point skipping**: hashing starts `minSize` bytes into a chunk (no cut can fall earlier).
/// - **Normalized chunking** (level 2): below `avgSize` a cut needs `log2(avg) + 2` zero bits
///   (`maskS`, hard), above it `log2(avg) - 2` (`maskL`, easy), which pulls chunk sizes towards
///   the average instead of the long exponential tail of plain CDC.
/// - **Two bytes per step**: the loop rolls two bytes per iteration with a pre-shifted table
///   (`gear << 1`) and a pre-shifted mask, which tests the same bits as the one-byte loop (so the
///   cut points are identical — `referenceCut` checks that) with half the loop overhead. The two
///   table values are summed off the critical path, so `fp` advances by one shift and one add per
///   two bytes (2.5 GB/s here, Benchmarks/RESULTS.md).
///
/// The gear table is not public: it derives from the folder secret (see Protocol/secrets.md), so
/// chunk boundaries, and with them chunk sizes, do not leak which known file a folder holds.
/// `version` is recorded with every chunk list; a change to this algorithm or its parameters must
/// bump it.
public struct FastCDC: Sendable {
    public static let version: UInt8 = 1

    public struct Parameters: Sendable, Equatable {
        public var minSize: Int, avgSize: Int, maxSize: Int
        /// 16 / 64 / 256 KiB: DESIGN.md's trade-off between dedup granularity and per-chunk overhead.
        public static let `default` = Parameters(minSize: 16 << 10, avgSize: 64 << 10, maxSize: 256 << 10)
        public init(minSize: Int, avgSize: Int, maxSize: Int) {
            precondition(minSize >= 64 && minSize < avgSize && avgSize < maxSize, "need 64 <= min < avg < max")
            precondition(avgSize & (avgSize - 1) == 0, "avgSize must be a power of two")
            self.minSize = minSize; self.avgSize = avgSize; self.maxSize = maxSize
        }
    }

    public let parameters: Parameters
    let gear: [UInt64]
    let gearShifted: [UInt64]
    let maskS: UInt64, maskL: UInt64

    /// `gear` holds 256 pseudo-random 64-bit values (from the folder's chunker key).
    public init(gear: [UInt64], parameters: Parameters = .default) {
        precondition(gear.count == 256, "gear table has 256 entries")
        self.gear = gear
        self.gearShifted = gear.map { $0 << 1 }
        self.parameters = parameters
        let bits = parameters.avgSize.trailingZeroBitCount
        maskS = Self.spreadMask(bits: bits + 2)
        maskL = Self.spreadMask(bits: bits - 2)
    }

    /// `count` one-bits spread from bit 62 downwards, every other bit while they fit, so each tested
    /// bit sees a long window and no two tested bits are neighbours (neighbouring gear bits are
    /// correlated through the shift). Bit 63 stays clear so the pre-shifted mask does not overflow.
    static func spreadMask(bits count: Int) -> UInt64 {
        precondition(count >= 1 && count <= 31)
        var mask: UInt64 = 0
        for i in 0..<count { mask |= 1 << UInt64(62 - 2 * i) }
        return mask
    }

    /// Length of the next chunk at the start of `buffer`. The caller passes at least `maxSize`
    /// bytes unless the file ends inside the buffer (`isFinal`); the result is always in
    /// `1...min(buffer.count, maxSize)` for a non-empty buffer.
    public func cut(_ buffer: UnsafeRawBufferPointer, isFinal: Bool) -> Int {
        let p = parameters
        var n = buffer.count
        if n <= p.minSize { return n }
        if n > p.maxSize { n = p.maxSize }
        let normal = min(n, p.avgSize)
        let bytes = buffer.bindMemory(to: UInt8.self)
        return gear.withUnsafeBufferPointer { g in
            gearShifted.withUnsafeBufferPointer { gs in
                var fp: UInt64 = 0
                var i = p.minSize
                // Two bytes per step; the shifted mask tests the first byte's fp without a second shift.
                let maskSShifted = maskS << 1, maskLShifted = maskL << 1
                while i + 1 < normal {
                    let a = gs[Int(bytes[i])], b = g[Int(bytes[i + 1])]
                    let shifted = fp << 2
                    fp = shifted &+ (a &+ b)
                    if (shifted &+ a) & maskSShifted == 0 { return i + 1 }
                    if fp & maskS == 0 { return i + 2 }
                    i += 2
                }
                if i < normal {
                    fp = (fp << 1) &+ g[Int(bytes[i])]
                    if fp & maskS == 0 { return i + 1 }
                    i += 1
                }
                while i + 1 < n {
                    let a = gs[Int(bytes[i])], b = g[Int(bytes[i + 1])]
                    let shifted = fp << 2
                    fp = shifted &+ (a &+ b)
                    if (shifted &+ a) & maskLShifted == 0 { return i + 1 }
                    if fp & maskL == 0 { return i + 2 }
                    i += 2
                }
                if i < n {
                    fp = (fp << 1) &+ g[Int(bytes[i])]
                    if fp & maskL == 0 { return i + 1 }
                }
                return n
            }
        }
    }

    /// The algorithm as the paper writes it, one byte per step; tests hold `cut` to it.
    func referenceCut(_ bytes: ArraySlice<UInt8>) -> Int {
        var n = bytes.count
        if n <= parameters.minSize { return n }
        if n > parameters.maxSize { n = parameters.maxSize }
        var fp: UInt64 = 0
        for i in parameters.minSize..<n {
            fp = (fp << 1) &+ gear[Int(bytes[bytes.startIndex + i])]
            if fp & (i < parameters.avgSize ? maskS : maskL) == 0 { return i + 1 }
        }
        return n
    }

    /// Every chunk length of an in-memory buffer (tests, small files).
    public func chunkLengths(of bytes: [UInt8]) -> [Int] {
        bytes.withUnsafeBytes { b in
            var out: [Int] = []
            var at = 0
            while at < b.count {
                let n = cut(UnsafeRawBufferPointer(rebasing: b[at...]), isFinal: true)
                out.append(n)
                at += n
            }
            return out
        }
    }

    /// A deterministic gear table for tests and benchmarks (SplitMix64). Folders derive theirs
    /// from the secret instead.
    public static func testGear(seed: UInt64) -> [UInt64] {
        var x = seed
        return (0..<256).map { _ in
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
