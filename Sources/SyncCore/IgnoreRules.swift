/// `.syncignore`: gitignore's pattern language (gitignore(5)), applied to folder-relative paths.
///
/// - One pattern per line; blank lines and lines starting with `#` are skipped; `\#` and `\!` start
///   a pattern with a literal `#` or `!`; trailing spaces are dropped unless escaped (`\ `); CRLF
///   line endings are fine.
/// - `!pattern` re-includes what an earlier pattern excluded; the last matching line wins.
/// - A trailing `/` matches directories only.
/// - A pattern with a `/` at its start or in its middle is anchored at the folder root; otherwise
///   it matches a name at any depth.
/// - `*` is any run of characters except `/`, `?` one character except `/`, `[a-z]` / `[!a]` /
///   `[^a]` a class, `\x` a literal `x`. `**/` as a leading segment matches any depth, `/**` as a
///   trailing one everything inside, `/**/` zero or more directories; other `**` act like `*`.
/// - A path inside an ignored directory is ignored, whatever later lines say (git cannot re-include
///   a file whose parent directory is excluded either).
/// - The folder's own `.syncd/` directory is always ignored; no pattern can re-include it.
///
/// Deviation from git, by choice: an unterminated `[` is a literal `[` (git's wildmatch makes the
/// whole pattern match nothing); either way nothing crashes and the line is not silently widened.
public struct IgnoreRules: Sendable {
    struct Rule: Sendable {
        let negated: Bool
        let directoryOnly: Bool
        let matcher: Matcher
    }

    /// A compiled pattern. Basename-only literal and `*suffix` patterns (the common `node_modules`,
    /// `*.o`) skip the general segment matcher.
    enum Matcher: Sendable {
        case name([UInt8])
        case nameSuffix([UInt8])
        case basename(Glob)
        case anchored([Segment])
    }

    enum Segment: Sendable, Equatable {
        case anyDepth           // `**`
        case glob(Glob)
    }

    enum Token: Sendable, Equatable {
        case literal(UInt8)
        case any                // `?`
        case star               // `*`
        case set([ClosedRange<UInt8>], negated: Bool)
    }

    typealias Glob = [Token]

    let rules: [Rule]

    public static let empty = IgnoreRules(parsing: "")

    public init(parsing text: String) {
        rules = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" }
            .compactMap { Self.compile(Array(String($0).utf8)) }
    }

    /// Whether `path` (folder-relative, `/`-separated) is ignored, itself or through an ancestor.
    public func isIgnored(_ path: String, isDirectory: Bool) -> Bool {
        if path == ".syncd" || path.hasPrefix(".syncd/") { return true }
        if rules.isEmpty { return false }
        let segments = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map { Array($0) }
        guard !segments.isEmpty else { return false }
        for depth in 1..<segments.count where verdict(segments[..<depth], isDirectory: true) {
            return true
        }
        return verdict(segments[...], isDirectory: isDirectory)
    }

    /// The last matching rule's verdict for the path itself (ancestors not considered).
    private func verdict(_ segments: ArraySlice<[UInt8]>, isDirectory: Bool) -> Bool {
        for rule in rules.reversed() where !rule.directoryOnly || isDirectory {
            if Self.matches(rule.matcher, segments) { return !rule.negated }
        }
        return false
    }

    static func matches(_ matcher: Matcher, _ segments: ArraySlice<[UInt8]>) -> Bool {
        let name = segments.last!
        switch matcher {
        case .name(let literal): return name == literal
        case .nameSuffix(let suffix): return name.count >= suffix.count && name.suffix(suffix.count).elementsEqual(suffix)
        case .basename(let glob): return matchGlob(glob[...], name[...])
        case .anchored(let pattern): return matchSegments(pattern[...], segments)
        }
    }

    /// Segment-level matching; `**` takes zero or more segments, except in last position, where it
    /// takes at least one ("everything inside", not the directory itself).
    static func matchSegments(_ pattern: ArraySlice<Segment>, _ path: ArraySlice<[UInt8]>) -> Bool {
        guard let first = pattern.first else { return path.isEmpty }
        switch first {
        case .anyDepth:
            let rest = pattern.dropFirst()
            if rest.isEmpty { return !path.isEmpty }
            var tail = path
            while true {
                if matchSegments(rest, tail) { return true }
                guard !tail.isEmpty else { return false }
                tail = tail.dropFirst()
            }
        case .glob(let glob):
            guard let segment = path.first, matchGlob(glob[...], segment[...]) else { return false }
            return matchSegments(pattern.dropFirst(), path.dropFirst())
        }
    }

    /// Glob matching within one path segment (no `/` to worry about), iterative with one
    /// backtrack point per `*` as in classic wildcard matching.
    static func matchGlob(_ glob: ArraySlice<Token>, _ text: ArraySlice<UInt8>) -> Bool {
        var g = glob.startIndex, t = text.startIndex
        var starAt: Int?, starText = text.startIndex
        while t < text.endIndex {
            if g < glob.endIndex {
                switch glob[g] {
                case .star:
                    starAt = g; starText = t; g += 1
                    continue
                case .any:
                    g += 1; t += 1
                    continue
                case .literal(let c) where c == text[t]:
                    g += 1; t += 1
                    continue
                case let .set(ranges, negated) where ranges.contains { $0.contains(text[t]) } != negated:
                    g += 1; t += 1
                    continue
                default:
                    break
                }
            }
            guard let star = starAt else { return false }
            g = star + 1
            starText += 1
            t = starText
        }
        while g < glob.endIndex, glob[g] == .star { g += 1 }
        return g == glob.endIndex
    }

    // MARK: compiling

    static func compile(_ line: [UInt8]) -> Rule? {
        var bytes = line
        if bytes.last == UInt8(ascii: "\r") { bytes.removeLast() }
        // Trailing spaces go, unless the last one is escaped.
        while bytes.last == UInt8(ascii: " ") {
            if bytes.count >= 2 && bytes[bytes.count - 2] == UInt8(ascii: "\\") { break }
            bytes.removeLast()
        }
        guard let first = bytes.first, first != UInt8(ascii: "#") else { return nil }
        var negated = false
        if first == UInt8(ascii: "!") {
            negated = true
            bytes.removeFirst()
        }
        var directoryOnly = false
        if bytes.last == UInt8(ascii: "/") && !(bytes.count >= 2 && bytes[bytes.count - 2] == UInt8(ascii: "\\")) {
            directoryOnly = true
            while bytes.last == UInt8(ascii: "/") { bytes.removeLast() }
        }
        let anchored = bytes.contains(UInt8(ascii: "/"))
        while bytes.first == UInt8(ascii: "/") { bytes.removeFirst() }
        guard !bytes.isEmpty else { return nil }
        let segments = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map { raw -> Segment in
            raw.elementsEqual("**".utf8) ? .anyDepth : .glob(tokens(Array(raw)))
        }
        return Rule(negated: negated, directoryOnly: directoryOnly,
                    matcher: anchored ? .anchored(segments) : basenameMatcher(segments[0]))
    }

    static func basenameMatcher(_ segment: Segment) -> Matcher {
        guard case .glob(let glob) = segment else { return .anchored([.anyDepth, .anyDepth]) }   // `**` alone: anything
        var literals: [UInt8] = []
        for token in glob {
            guard case .literal(let c) = token else { break }
            literals.append(c)
        }
        if literals.count == glob.count { return .name(literals) }
        if glob.first == .star, glob.dropFirst().allSatisfy({ if case .literal = $0 { true } else { false } }) {
            return .nameSuffix(glob.dropFirst().map { if case .literal(let c) = $0 { c } else { 0 } })
        }
        return .basename(glob)
    }

    static func tokens(_ raw: [UInt8]) -> Glob {
        var out: Glob = []
        var i = 0
        while i < raw.count {
            let c = raw[i]
            switch c {
            case UInt8(ascii: "\\") where i + 1 < raw.count:
                out.append(.literal(raw[i + 1])); i += 2
            case UInt8(ascii: "*"):
                if out.last != .star { out.append(.star) }
                i += 1
            case UInt8(ascii: "?"):
                out.append(.any); i += 1
            case UInt8(ascii: "["):
                if let (set, next) = characterClass(raw, from: i) {
                    out.append(set); i = next
                } else {
                    out.append(.literal(c)); i += 1
                }
            default:
                out.append(.literal(c)); i += 1
            }
        }
        return out
    }

    /// `[...]` starting at `start`; nil if it never closes.
    static func characterClass(_ raw: [UInt8], from start: Int) -> (Token, Int)? {
        var i = start + 1
        var negated = false
        if i < raw.count && (raw[i] == UInt8(ascii: "!") || raw[i] == UInt8(ascii: "^")) { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt8>] = []
        var first = true
        while i < raw.count {
            var c = raw[i]
            if c == UInt8(ascii: "]") && !first { return (.set(ranges, negated: negated), i + 1) }
            first = false
            if c == UInt8(ascii: "\\") && i + 1 < raw.count { i += 1; c = raw[i] }
            if i + 2 < raw.count && raw[i + 1] == UInt8(ascii: "-") && raw[i + 2] != UInt8(ascii: "]") {
                let hi = raw[i + 2]
                if c <= hi { ranges.append(c...hi) }
                i += 3
            } else {
                ranges.append(c...c)
                i += 1
            }
        }
        return nil
    }
}
