#pragma once

#include <utility>

namespace lmx::core {

// Gives `target` a value for the rest of the enclosing scope and puts back the one it had when
// the scope ends, also by an exception or a co_return.
template <class T>
class [[nodiscard]] scoped_value {
public:
    scoped_value(T& target, T value) : target_(target), saved_(std::exchange(target, std::move(value))) {}
    ~scoped_value() { target_ = std::move(saved_); }
    scoped_value(const scoped_value&) = delete;
    scoped_value& operator=(const scoped_value&) = delete;

private:
    T& target_;
    T saved_;
};

}  // namespace lmx::core
