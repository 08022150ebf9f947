@testable import SyncCore
import XCTest

final class IgnoreRulesTests: XCTestCase {
    func ignored(_ rules: String, _ path: String, dir: Bool = false) -> Bool {
        IgnoreRules(parsing: rules).isIgnored(path, isDirectory: dir)
    }

    func test_basenamePattern_shouldMatchAtAnyDepth() {
        XCTAssertTrue(ignored("*.log", "a.log"))
        XCTAssertTrue(ignored("*.log", "deep/er/a.log"))
        XCTAssertFalse(ignored("*.log", "a.log.txt"))
        XCTAssertTrue(ignored("node_modules", "web/node_modules", dir: true))
        XCTAssertTrue(ignored("node_modules", "web/node_modules/x/y.js"), "inside an ignored directory")
        XCTAssertFalse(ignored("node_modules", "web/node_modules_old/y.js"))
    }

    func test_star_shouldNotCrossSlash() {
        XCTAssertTrue(ignored("doc/*.txt", "doc/a.txt"))
        XCTAssertFalse(ignored("doc/*.txt", "doc/x/a.txt"))
        XCTAssertFalse(ignored("a*c", "ab/c"))
        XCTAssertTrue(ignored("a*c", "abbbc"))
        XCTAssertTrue(ignored("a?c", "abc"))
        XCTAssertFalse(ignored("a?c", "a/c"))
    }

    func test_leadingSlash_shouldAnchorAtRoot() {
        XCTAssertTrue(ignored("/root.txt", "root.txt"))
        XCTAssertFalse(ignored("/root.txt", "sub/root.txt"))
        XCTAssertTrue(ignored("build/out", "build/out"))
        XCTAssertFalse(ignored("build/out", "x/build/out"), "a middle slash anchors too")
    }

    func test_doubleStar_shouldMatchAnyDepth() {
        XCTAssertTrue(ignored("**/foo", "foo"))
        XCTAssertTrue(ignored("**/foo", "a/b/foo"))
        XCTAssertTrue(ignored("**/foo/bar", "x/foo/bar"))
        XCTAssertTrue(ignored("abc/**", "abc/x"))
        XCTAssertTrue(ignored("abc/**", "abc/x/y/z"))
        XCTAssertFalse(ignored("abc/**", "abc", dir: true), "trailing /** is everything inside, not the directory")
        XCTAssertTrue(ignored("a/**/b", "a/b"))
        XCTAssertTrue(ignored("a/**/b", "a/x/b"))
        XCTAssertTrue(ignored("a/**/b", "a/x/y/b"))
        XCTAssertFalse(ignored("a/**/b", "a/x/y/c"))
        XCTAssertTrue(ignored("a**b", "axxb"), "other ** is like *")
        XCTAssertFalse(ignored("a**b", "ax/xb"))
    }

    func test_trailingSlash_shouldMatchDirectoriesOnly() {
        XCTAssertTrue(ignored("tmp/", "tmp", dir: true))
        XCTAssertTrue(ignored("tmp/", "src/tmp", dir: true))
        XCTAssertTrue(ignored("tmp/", "tmp/file.c"), "files under the directory")
        XCTAssertFalse(ignored("tmp/", "tmp"), "a file named tmp is not a directory")
    }

    func test_negation_shouldReincludeAndLastMatchWins() {
        let rules = "*.log\n!keep.log\n"
        XCTAssertTrue(ignored(rules, "a.log"))
        XCTAssertFalse(ignored(rules, "keep.log"))
        XCTAssertFalse(ignored(rules, "sub/keep.log"))
        XCTAssertTrue(ignored("!keep.log\n*.log", "keep.log"), "order matters: the later rule wins")
    }

    func test_negation_shouldNotReincludeInsideIgnoredDirectory() {
        let rules = "build/\n!build/keep.txt\n"
        XCTAssertTrue(ignored(rules, "build/keep.txt"))
        // Re-including the directory itself does work.
        XCTAssertFalse(ignored("build/\n!build/\n", "build/keep.txt"))
    }

    func test_characterClasses_shouldMatchSetsRangesAndNegations() {
        XCTAssertTrue(ignored("file[0-9].txt", "file7.txt"))
        XCTAssertFalse(ignored("file[0-9].txt", "filex.txt"))
        XCTAssertTrue(ignored("[abc].c", "b.c"))
        XCTAssertFalse(ignored("[abc].c", "d.c"))
        XCTAssertTrue(ignored("[!a]x", "bx"))
        XCTAssertFalse(ignored("[!a]x", "ax"))
        XCTAssertTrue(ignored("[^a]x", "cx"))
        XCTAssertTrue(ignored("[]]x", "]x"), "a leading ] is a member")
    }

    func test_escapesCommentsAndSpaces_shouldFollowGitignore() {
        XCTAssertFalse(ignored("#notes", "#notes"), "a comment")
        XCTAssertTrue(ignored("\\#notes", "#notes"))
        XCTAssertTrue(ignored("\\!important", "!important"))
        XCTAssertTrue(ignored("trail.txt   ", "trail.txt"), "trailing spaces dropped")
        XCTAssertTrue(ignored("space\\ ", "space "), "an escaped trailing space stays")
        XCTAssertFalse(ignored("space\\ ", "space"))
        XCTAssertTrue(ignored("a\\*b", "a*b"))
        XCTAssertFalse(ignored("a\\*b", "axb"))
        XCTAssertFalse(ignored("\n\n   \n# only comments\n", "anything"))
    }

    func test_crlfLines_shouldParseLikeLf() {
        let rules = "*.o\r\n!keep.o\r\ntmp/\r\n"
        XCTAssertTrue(ignored(rules, "x.o"))
        XCTAssertFalse(ignored(rules, "keep.o"))
        XCTAssertTrue(ignored(rules, "tmp", dir: true))
    }

    func test_stateDirectory_shouldAlwaysBeIgnored() {
        XCTAssertTrue(IgnoreRules.empty.isIgnored(".syncd", isDirectory: true))
        XCTAssertTrue(IgnoreRules.empty.isIgnored(".syncd/trash/x", isDirectory: false))
        XCTAssertTrue(ignored("!.syncd\n!.syncd/**", ".syncd/tmp/a"))
        XCTAssertFalse(IgnoreRules.empty.isIgnored(".syncdx", isDirectory: false))
        XCTAssertFalse(IgnoreRules.empty.isIgnored("a/.syncd", isDirectory: true), "only the folder's own")
    }

    func test_malformedPatterns_shouldNotCrash() {
        XCTAssertTrue(ignored("[abc", "[abc"), "an unterminated [ is literal")
        XCTAssertFalse(ignored("[abc", "a"))
        for junk in ["[", "]", "\\", "!", "/", "**", "***", "[z-a]", "a/**/", "!/", "[!]"] {
            _ = ignored(junk, "some/path.txt")
            _ = ignored(junk, "x", dir: true)
        }
        XCTAssertTrue(ignored("**", "any/thing"))
    }
}
